package rig

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// PodSecurityLevel is the Pod Security Standard the rig enforces in the etcd cluster's namespace:
// the snapshot Jobs' pods must pass "restricted", as they would in a hardened cluster.
const PodSecurityLevel = "restricted"

// enforcePodSecurity labels namespace so the apiserver's PodSecurity admission enforces, warns about
// and audits PodSecurityLevel for every pod created there.
func (r *Rig) enforcePodSecurity(ctx context.Context, namespace string) error {
	patch := fmt.Sprintf(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":%[1]q,"pod-security.kubernetes.io/enforce-version":"latest",`+
		`"pod-security.kubernetes.io/warn":%[1]q,"pod-security.kubernetes.io/audit":%[1]q}}}`, PodSecurityLevel)
	if _, err := r.Kube.CoreV1().Namespaces().Patch(ctx, namespace, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: fieldManager}); err != nil {
		return fmt.Errorf("rig: enforce pod security %q in namespace %s: %w", PodSecurityLevel, namespace, err)
	}
	return nil
}
