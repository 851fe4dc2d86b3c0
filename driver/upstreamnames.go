package driver

import (
	"crypto/sha256"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
)

// Names that belong to kubernetes-csi/external-snapshotter and the CSI sidecars: object name
// prefixes, annotations and class parameters the driver must spell as upstream does. Upstream keeps
// them in its controllers' packages, not in client/v8, so they are copied here, each citing where
// external-snapshotter v8.7.0 defines it; a new upstream release is checked against this file.
// This project's own keys are in labels.go.
const (
	// upstreamContentPrefix starts the name of the VolumeSnapshotContent upstream makes for a dynamic
	// VolumeSnapshot, "snapcontent-<VolumeSnapshot UID>" (pkg/utils/util.go,
	// GetDynamicSnapshotContentNameForSnapshot), and of a group member's (upstreamMemberContentName).
	upstreamContentPrefix = "snapcontent-"
	// upstreamGroupContentPrefix starts the name of the VolumeGroupSnapshotContent of a dynamic
	// VolumeGroupSnapshot, "groupsnapcontent-<VolumeGroupSnapshot UID>" (pkg/utils/util.go,
	// GetDynamicSnapshotContentNameForGroupSnapshot).
	upstreamGroupContentPrefix = "groupsnapcontent-"

	// upstreamParameterPrefix marks class parameters the CSI sidecars add or consume themselves
	// (pkg/utils/util.go, csiParameterPrefix).
	upstreamParameterPrefix = "csi.storage.k8s.io/"
	// upstreamSnapshotterSecretName and upstreamSnapshotterSecretNamespace are a
	// VolumeSnapshotClass's secret parameters (pkg/utils/util.go, PrefixedSnapshotterSecretNameKey
	// and PrefixedSnapshotterSecretNamespaceKey).
	upstreamSnapshotterSecretName      = upstreamParameterPrefix + "snapshotter-secret-name"
	upstreamSnapshotterSecretNamespace = upstreamParameterPrefix + "snapshotter-secret-namespace"
	// upstreamGroupSnapshotterSecretName and upstreamGroupSnapshotterSecretNamespace are a
	// VolumeGroupSnapshotClass's secret parameters (pkg/utils/util.go,
	// PrefixedGroupSnapshotterSecretNameKey and PrefixedGroupSnapshotterSecretNamespaceKey).
	upstreamGroupSnapshotterSecretName      = upstreamParameterPrefix + "group-snapshotter-secret-name"
	upstreamGroupSnapshotterSecretNamespace = upstreamParameterPrefix + "group-snapshotter-secret-namespace"

	// upstreamGroupIsDefaultClassAnnotation marks the default VolumeGroupSnapshotClass
	// (pkg/utils/util.go, IsDefaultGroupSnapshotClassAnnotation).
	upstreamGroupIsDefaultClassAnnotation = "groupsnapshot.storage.kubernetes.io/is-default-class"
	// upstreamGroupDeletionSecretNameAnnotation and upstreamGroupDeletionSecretNamespaceAnnotation
	// carry the secret a VolumeGroupSnapshotContent is deleted with (pkg/utils/util.go,
	// AnnDeletionGroupSecretRefName and AnnDeletionGroupSecretRefNamespace).
	upstreamGroupDeletionSecretNameAnnotation      = "groupsnapshot.storage.kubernetes.io/deletion-secret-name"
	upstreamGroupDeletionSecretNamespaceAnnotation = "groupsnapshot.storage.kubernetes.io/deletion-secret-namespace"
	// upstreamGroupBeingCreatedAnnotation is set by the csi-snapshotter on a VolumeGroupSnapshotContent
	// while a CreateVolumeGroupSnapshot call is unanswered; it keeps calling Create, even on a deleted
	// content, until an answer lets it remove it (pkg/utils/util.go, AnnVolumeGroupSnapshotBeingCreated).
	upstreamGroupBeingCreatedAnnotation = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-created"
	// upstreamGroupBeingDeletedAnnotation is set by the snapshot-controller on a
	// VolumeGroupSnapshotContent whose VolumeGroupSnapshot is being deleted (pkg/utils/util.go,
	// AnnVolumeGroupSnapshotBeingDeleted).
	upstreamGroupBeingDeletedAnnotation = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-deleted"
)

// upstreamMemberContentName is upstream's name for the member VolumeSnapshotContent of
// volumeHandle in the group snapshot of VolumeGroupSnapshot vgsUID
// (getSnapshotContentNameForVolumeGroupSnapshotContent in
// pkg/common-controller/groupsnapshot_controller_helper.go; unexported, hence copied).
func upstreamMemberContentName(vgsUID types.UID, volumeHandle string) string {
	return fmt.Sprintf(upstreamContentPrefix+"%x", sha256.Sum256([]byte(string(vgsUID)+volumeHandle)))
}
