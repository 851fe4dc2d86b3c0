package driver

import (
	"fmt"
	"os"
	"slices"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// dgSecretRef resolves the group-snapshotter secret parameters of a class like
// upstream's utils.GetGroupSnapshotSecretReference: both keys or neither; the
// namespace may use ${volumegroupsnapshotcontent.name} and
// ${volumegroupsnapshot.namespace}, the name also ${volumegroupsnapshot.name}.
func dgSecretRef(params map[string]string, contentName string, vgs *groupsnapshotv1.VolumeGroupSnapshot) (*corev1.SecretReference, error) {
	nameTemplate, hasName := params[upstreamGroupSnapshotterSecretName]
	namespaceTemplate, hasNamespace := params[upstreamGroupSnapshotterSecretNamespace]
	switch {
	case !hasName && !hasNamespace:
		return nil, nil
	case hasName != hasNamespace:
		return nil, fmt.Errorf("parameters %s and %s must be set together", upstreamGroupSnapshotterSecretName, upstreamGroupSnapshotterSecretNamespace)
	case nameTemplate == "" || namespaceTemplate == "":
		return nil, fmt.Errorf("parameters %s and %s must not be empty", upstreamGroupSnapshotterSecretName, upstreamGroupSnapshotterSecretNamespace)
	}

	namespaceParams := map[string]string{
		"volumegroupsnapshotcontent.name": contentName,
		"volumegroupsnapshot.namespace":   vgs.Namespace,
	}
	namespace, err := dgExpand(namespaceTemplate, namespaceParams)
	if err != nil {
		return nil, err
	}
	if len(validation.IsDNS1123Label(namespace)) > 0 {
		return nil, fmt.Errorf("%s %q resolved to %q, which is not a valid namespace name", upstreamGroupSnapshotterSecretNamespace, namespaceTemplate, namespace)
	}

	nameParams := map[string]string{
		"volumegroupsnapshotcontent.name": contentName,
		"volumegroupsnapshot.namespace":   vgs.Namespace,
		"volumegroupsnapshot.name":        vgs.Name,
	}
	name, err := dgExpand(nameTemplate, nameParams)
	if err != nil {
		return nil, err
	}
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		return nil, fmt.Errorf("%s %q resolved to %q, which is not a valid secret name", upstreamGroupSnapshotterSecretName, nameTemplate, name)
	}
	return &corev1.SecretReference{Name: name, Namespace: namespace}, nil
}

func dgExpand(template string, params map[string]string) (string, error) {
	var missing []string
	out := os.Expand(template, func(k string) string {
		v, ok := params[k]
		if !ok && !slices.Contains(missing, k) {
			missing = append(missing, k)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q uses unsupported tokens %q", template, missing)
	}
	return out, nil
}
