package e2e

import (
	"context"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2ERestoreRBAC checks the ClusterRole etcd-snapshot-driver-restorer of manifests/restorer.yaml as
// the apiserver decides it: every request the restore command makes is allowed, and what it does not
// need (pod exec, Secret writes, RBAC, the snapshot objects themselves) is refused. The restore e2e
// tests run the command under this role, so a missing verb also fails them.
func TestE2ERestoreRBAC(t *testing.T) {
	r, ctx := setup(t)
	const (
		user      = "e2e-restorer"
		group     = "groupsnapshot.storage.k8s.io"
		snapGroup = "snapshot.storage.k8s.io"
	)
	ns := r.Namespace
	bindUser(t, ctx, r, user, "etcd-snapshot-driver-restorer")

	var needed []access
	needed = append(needed, verbs(group, "volumegroupsnapshots", ns, "get")...)
	needed = append(needed, verbs(group, "volumegroupsnapshotcontents", "", "get")...)
	needed = append(needed, verbs(group, "volumegroupsnapshotclasses", "", "get")...)
	needed = append(needed, verbs(snapGroup, "volumesnapshots", ns, "get")...)
	needed = append(needed, verbs(snapGroup, "volumesnapshotcontents", "", "get")...)
	needed = append(needed, verbs(snapGroup, "volumesnapshotclasses", "", "get")...)
	needed = append(needed, verbs("", "configmaps", rig.DriverNamespace, "get")...)
	needed = append(needed, verbs("", "persistentvolumeclaims", ns, "get", "list", "watch", "create", "delete")...)
	needed = append(needed, verbs("", "persistentvolumes", "", "get", "create", "delete")...)
	needed = append(needed, verbs("", "pods", ns, "list", "watch")...)
	needed = append(needed, verbs("apps", "statefulsets", ns, "get", "list", "watch", "update")...)
	needed = append(needed, verbs("batch", "jobs", ns, "get", "list", "watch", "create", "delete")...)
	needed = append(needed, verbs("storage.k8s.io", "storageclasses", "", "get")...)
	needed = append(needed, verbs("", "services", ns, "list")...)
	needed = append(needed, verbs("", "secrets", ns, "get")...)
	needed = append(needed, verbs("", "events", ns, "create")...)

	refused := []access{
		{resource: "pods", subresource: "exec", verb: "create", namespace: ns},
		{resource: "pods", verb: "create", namespace: ns},
		{resource: "pods", verb: "delete", namespace: ns},
		{resource: "secrets", verb: "list", namespace: ns},
		{resource: "secrets", verb: "create", namespace: ns},
		{resource: "secrets", verb: "delete", namespace: ns},
		{resource: "configmaps", verb: "update", namespace: rig.DriverNamespace},
		{resource: "configmaps", verb: "delete", namespace: rig.DriverNamespace},
		{resource: "configmaps", verb: "list", namespace: rig.DriverNamespace},
		{resource: "persistentvolumes", verb: "update"},
		{resource: "persistentvolumeclaims", verb: "update", namespace: ns},
		{group: "apps", resource: "statefulsets", verb: "delete", namespace: ns},
		{group: "apps", resource: "statefulsets", verb: "create", namespace: ns},
		{group: "batch", resource: "jobs", verb: "update", namespace: ns},
		{group: group, resource: "volumegroupsnapshots", verb: "delete", namespace: ns},
		{group: group, resource: "volumegroupsnapshotcontents", verb: "delete"},
		{group: snapGroup, resource: "volumesnapshots", verb: "create", namespace: ns},
		{group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", verb: "create"},
		{resource: "serviceaccounts", subresource: "token", verb: "create", namespace: rig.DriverNamespace},
	}
	missing, excess := reviewAccess(t, ctx, r, user, []string{"system:authenticated"}, needed, refused)
	t.Logf("restorer: %d requests checked allowed, %d checked refused", len(needed), len(refused))
	if len(missing) > 0 {
		t.Errorf("the restorer may not:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(excess) > 0 {
		t.Errorf("the restorer may, but must not:\n  %s", strings.Join(excess, "\n  "))
	}
}

// bindUser binds the ClusterRole to user for the test's duration.
func bindUser(t *testing.T, ctx context.Context, r *rig.Rig, user, clusterRole string) {
	t.Helper()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName(user)},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: clusterRole},
	}
	if _, err := r.Kube.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.Kube.RbacV1().ClusterRoleBindings().Delete(cleanupContext(t), crb.Name, metav1.DeleteOptions{})
	})
}
