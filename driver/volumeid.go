package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// pvHandleIndex indexes PersistentVolumes by spec.csi.volumeHandle. The upstream snapshot controller
// passes PV handles, and etcd's PVs belong to whatever CSI driver stores them, so the driver name is
// not part of the key.
const pvHandleIndex = "csiVolumeHandle"

func pvHandleIndexFunc(obj any) ([]string, error) {
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Spec.CSI == nil || pv.Spec.CSI.VolumeHandle == "" {
		return nil, nil
	}
	return []string{pv.Spec.CSI.VolumeHandle}, nil
}

// resolvedVolume is one source volume id and the PVC it names.
type resolvedVolume struct {
	VolumeID string
	PVC      *corev1.PersistentVolumeClaim
}

// resolvedSources are the volumes of one request, all in one namespace and one etcd cluster.
type resolvedSources struct {
	Namespace string
	Cluster   string
	Volumes   []resolvedVolume
}

// resolveSources maps every volume id to its PVC and checks that they all belong to one etcd cluster
// in one namespace. Errors name the offending volume id.
func (e *Engine) resolveSources(ctx context.Context, ids []string) (*resolvedSources, error) {
	out := &resolvedSources{}
	seen := map[string]string{}
	for _, id := range ids {
		pvc, err := e.resolveVolume(ctx, id)
		if err != nil {
			return nil, err
		}
		cluster := pvc.Labels[e.cfg.ClusterLabel]
		if cluster == "" {
			return nil, status.Errorf(codes.InvalidArgument, "volume %q: PVC %s/%s has no %s label, so its etcd cluster is unknown",
				id, pvc.Namespace, pvc.Name, e.cfg.ClusterLabel)
		}
		key := pvc.Namespace + "/" + pvc.Name
		if other, dup := seen[key]; dup {
			return nil, status.Errorf(codes.InvalidArgument, "volume %q and volume %q are the same PVC %s", id, other, key)
		}
		seen[key] = id
		if len(out.Volumes) == 0 {
			out.Namespace, out.Cluster = pvc.Namespace, cluster
		} else {
			first := out.Volumes[0].VolumeID
			if pvc.Namespace != out.Namespace {
				return nil, status.Errorf(codes.InvalidArgument, "volume %q is in namespace %q but volume %q is in %q; all volumes of a snapshot must be in one namespace",
					id, pvc.Namespace, first, out.Namespace)
			}
			if cluster != out.Cluster {
				return nil, status.Errorf(codes.InvalidArgument, "volume %q belongs to etcd cluster %q (%s) but volume %q to %q; all volumes of a snapshot must belong to one cluster",
					id, cluster, e.cfg.ClusterLabel, first, out.Cluster)
			}
		}
		out.Volumes = append(out.Volumes, resolvedVolume{VolumeID: id, PVC: pvc})
	}
	return out, nil
}

// resolveVolume finds the PVC a volume id names. A PV volume handle is tried first (handles may
// contain slashes, like the absolute paths of hostpath drivers), then "namespace/pvc-name".
// A well-formed id naming nothing is NotFound; an id that cannot name anything is InvalidArgument.
func (e *Engine) resolveVolume(ctx context.Context, id string) (*corev1.PersistentVolumeClaim, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "a source volume id is empty")
	}
	pvc, err := e.lookupVolume(ctx, id)
	if errors.Is(err, errUnnamedVolume) {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q is neither the CSI volume handle of a known PV nor of the form namespace/pvc-name", id)
	}
	return pvc, err
}

// errUnnamedVolume is lookupVolume's answer for an id that is neither the handle of a known PV nor of
// the form namespace/pvc-name: a caller that must name a volume gets InvalidArgument, one asking
// whether a volume exists gets NotFound.
var errUnnamedVolume = errors.New("driver: the volume id names no PV handle and no namespace/pvc-name")

// lookupVolume is resolveVolume without the empty-id check, returning errUnnamedVolume unwrapped.
func (e *Engine) lookupVolume(ctx context.Context, id string) (*corev1.PersistentVolumeClaim, error) {
	pvs, err := e.pvIndexer.ByIndex(pvHandleIndex, id)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %q: PV index: %v", id, err)
	}
	switch len(pvs) {
	case 0:
	case 1:
		return e.claimOfPV(ctx, id, pvs[0].(*corev1.PersistentVolume))
	default:
		names := make([]string, 0, len(pvs))
		for _, o := range pvs {
			names = append(names, o.(*corev1.PersistentVolume).Name)
		}
		return nil, status.Errorf(codes.InvalidArgument, "volume %q is the CSI volume handle of several PVs (%s); pass namespace/pvc-name instead",
			id, strings.Join(names, ", "))
	}
	ns, name, ok := splitPVCID(id)
	if !ok {
		return nil, errUnnamedVolume
	}
	return e.getPVC(ctx, id, ns, name)
}

// claimOfPV follows a PV's claimRef to its PVC and checks the claim really is bound to that PV.
func (e *Engine) claimOfPV(ctx context.Context, id string, pv *corev1.PersistentVolume) (*corev1.PersistentVolumeClaim, error) {
	ref := pv.Spec.ClaimRef
	if ref == nil || ref.Name == "" {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: PV %s is not bound to a PVC", id, pv.Name)
	}
	pvc, err := e.getPVC(ctx, id, ref.Namespace, ref.Name)
	if err != nil {
		return nil, err
	}
	if pvc.Spec.VolumeName != "" && pvc.Spec.VolumeName != pv.Name {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: PV %s claims PVC %s/%s, which is bound to PV %s instead",
			id, pv.Name, ref.Namespace, ref.Name, pvc.Spec.VolumeName)
	}
	return pvc, nil
}

func (e *Engine) getPVC(ctx context.Context, id, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	pvc, err := e.cfg.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.NotFound, "volume %q: PVC %s/%s not found", id, ns, name)
	}
	if err != nil {
		return nil, kubeStatus(err, "volume %q: reading PVC %s/%s", id, ns, name)
	}
	return pvc, nil
}

// splitPVCID parses "namespace/pvc-name" where both parts are valid object names.
func splitPVCID(id string) (ns, name string, ok bool) {
	ns, name, found := strings.Cut(id, "/")
	if !found || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return "", "", false
	}
	return ns, name, true
}

// describeVolumes is a short list of volume ids for messages.
func describeVolumes(ids []string) string { return fmt.Sprintf("[%s]", strings.Join(ids, ", ")) }
