package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// access is one request the driver's ServiceAccount makes (or must not be able to make).
type access struct {
	group, resource, subresource, verb, namespace string
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	ns := a.namespace
	if ns == "" {
		ns = "(all namespaces)"
	}
	return fmt.Sprintf("%s %s in %s", a.verb, r, ns)
}

func verbs(group, res, ns string, vs ...string) []access {
	var out []access
	for _, v := range vs {
		out = append(out, access{group: group, resource: res, verb: v, namespace: ns})
	}
	return out
}

// TestE2ERBAC checks the permissions of the driver's ServiceAccount as the apiserver decides them
// with the manifests of manifests/ (and the example credentials RoleBinding) applied: every request
// the driver and its csi-snapshotter sidecar make is allowed, what they do not need is refused, and
// the admission policy stops the driver deleting a PVC it did not label.
func TestE2ERBAC(t *testing.T) {
	r, ctx := setup(t)
	const (
		etcdNS    = rig.DefaultNamespace
		driverNS  = rig.DriverNamespace
		group     = "groupsnapshot.storage.k8s.io"
		snapGroup = "snapshot.storage.k8s.io"
	)
	if r.Namespace != etcdNS {
		t.Fatalf("rig namespace %s, this test expects %s", r.Namespace, etcdNS)
	}

	// What the driver does (driver/*.go) and what the upstream csi-snapshotter v8.7.0 does, one reason
	// each in manifests/rbac.yaml.
	var needed []access
	// Engine: resolve volumes (PVC, or PV by handle), find the client Service, provision and remove the
	// snapshot PVC, Job (created suspended, resumed by patch) and its Secret; read results from pods.
	needed = append(needed, verbs("", "persistentvolumeclaims", etcdNS, "get", "list", "watch", "create", "delete")...)
	needed = append(needed, verbs("", "persistentvolumes", "", "get", "list", "watch", "patch")...)
	needed = append(needed, verbs("", "services", etcdNS, "list")...)
	needed = append(needed, verbs("", "secrets", etcdNS, "create", "delete")...)
	needed = append(needed, verbs("batch", "jobs", etcdNS, "get", "list", "watch", "create", "delete", "patch")...)
	needed = append(needed, verbs("", "pods", etcdNS, "list", "watch")...)
	// Metadata ConfigMaps in the driver's namespace.
	needed = append(needed, verbs("", "configmaps", driverNS, "get", "list", "watch", "create", "update", "delete")...)
	// Dynamic groups (driver/dynamicgroup.go) and events on them.
	needed = append(needed, verbs(group, "volumegroupsnapshots", etcdNS, "get", "list", "watch", "update")...)
	needed = append(needed, verbs(group, "volumegroupsnapshotclasses", "", "get", "list", "watch")...)
	// The sweeper (driver/sweeper.go) deletes pre-created contents whose VolumeGroupSnapshot is gone.
	needed = append(needed, verbs(group, "volumegroupsnapshotcontents", "", "get", "list", "watch", "create", "update", "patch", "delete")...)
	needed = append(needed, verbs("", "events", etcdNS, "create", "patch")...)
	// Schedules (driver/schedule.go): status only, and the runs' VolumeGroupSnapshots.
	needed = append(needed, verbs("snapshot.etcd.io", "etcdsnapshotschedules", etcdNS, "get", "list", "watch")...)
	needed = append(needed, access{group: "snapshot.etcd.io", resource: "etcdsnapshotschedules", subresource: "status", verb: "update", namespace: etcdNS})
	needed = append(needed, verbs(group, "volumegroupsnapshots", etcdNS, "create", "delete")...)
	// The csi-snapshotter sidecar.
	needed = append(needed, verbs(snapGroup, "volumesnapshotclasses", "", "get", "list", "watch")...)
	needed = append(needed, verbs(snapGroup, "volumesnapshotcontents", "", "get", "list", "watch", "update", "patch")...)
	needed = append(needed,
		access{group: snapGroup, resource: "volumesnapshotcontents", subresource: "status", verb: "update"},
		access{group: snapGroup, resource: "volumesnapshotcontents", subresource: "status", verb: "patch"},
		access{group: group, resource: "volumegroupsnapshotcontents", subresource: "status", verb: "update"},
		access{group: group, resource: "volumegroupsnapshotcontents", subresource: "status", verb: "patch"},
	)
	needed = append(needed, verbs("", "events", "default", "create", "patch")...) // events on cluster-scoped contents
	// The credential Secret named by the classes, through examples/credentials-rolebinding.yaml.
	needed = append(needed, access{resource: "secrets", verb: "get", namespace: etcdNS})

	refused := []access{
		// No cluster-wide Secret reads, and none outside the bound etcd namespace.
		{resource: "secrets", verb: "get"},
		{resource: "secrets", verb: "list"},
		{resource: "secrets", verb: "watch"},
		{resource: "secrets", verb: "get", namespace: driverNS},
		{resource: "secrets", verb: "list", namespace: etcdNS},
		{resource: "secrets", verb: "watch", namespace: etcdNS},
		{resource: "secrets", verb: "update", namespace: etcdNS},
		{resource: "secrets", verb: "patch", namespace: etcdNS},
		// Never the etcd members' volumes or workloads.
		{resource: "persistentvolumes", verb: "delete"},
		{resource: "persistentvolumes", verb: "create"},
		{resource: "persistentvolumeclaims", verb: "update", namespace: etcdNS},
		{resource: "persistentvolumeclaims", verb: "patch", namespace: etcdNS},
		{resource: "pods", verb: "create", namespace: etcdNS},
		{resource: "pods", verb: "delete", namespace: etcdNS},
		{resource: "pods", subresource: "exec", verb: "create", namespace: etcdNS},
		{resource: "pods", subresource: "log", verb: "get", namespace: etcdNS},
		{group: "apps", resource: "statefulsets", verb: "update", namespace: etcdNS},
		{resource: "configmaps", verb: "create", namespace: etcdNS},
		{resource: "configmaps", verb: "delete", namespace: "default"},
		{group: "snapshot.etcd.io", resource: "etcdsnapshotschedules", verb: "update", namespace: etcdNS},
		{group: "snapshot.etcd.io", resource: "etcdsnapshotschedules", verb: "delete", namespace: etcdNS},
		{group: snapGroup, resource: "volumesnapshots", verb: "create", namespace: etcdNS},
		{group: "rbac.authorization.k8s.io", resource: "rolebindings", verb: "create", namespace: etcdNS},
		{resource: "serviceaccounts", subresource: "token", verb: "create", namespace: driverNS},
	}

	// Every rule manifests/rbac.yaml binds to the account must be in effect too (a binding naming the
	// wrong role or subject shows up here).
	declared, err := manifestGrants()
	if err != nil {
		t.Fatal(err)
	}
	if len(declared) == 0 {
		t.Fatal("manifests/rbac.yaml binds no rule to the driver's ServiceAccount")
	}
	needed = append(needed, declared...)

	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + driverNS, "system:authenticated"}
	missing, excess := reviewAccess(t, ctx, r, rig.DriverUser, groups, needed, refused)
	t.Logf("%d requests checked allowed (%d from manifests/rbac.yaml), %d checked refused", len(needed), len(declared), len(refused))
	if len(missing) > 0 {
		t.Errorf("the driver's ServiceAccount may not:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(excess) > 0 {
		t.Errorf("the driver's ServiceAccount may, but must not:\n  %s", strings.Join(excess, "\n  "))
	}

	// The SubjectAccessReviews describe the account; a real token proves the apiserver agrees and that
	// the admission policy adds the label rule RBAC cannot express.
	asDriver, err := r.DriverClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	who, err := asDriver.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if who.Status.UserInfo.Username != rig.DriverUser {
		t.Fatalf("driver client authenticates as %q, want %q", who.Status.UserInfo.Username, rig.DriverUser)
	}
	if _, err := asDriver.CoreV1().Secrets(driverNS).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("driver lists Secrets in %s: %v, want Forbidden", driverNS, err)
	}

	pvc := func(name string, lbls map[string]string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: etcdNS, Labels: lbls},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				// No such class: the claim stays Pending and no volume is provisioned for it.
				StorageClassName: ptr.To("e2e-no-such-class"),
				Resources: corev1.VolumeResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")},
				},
			},
		}
	}
	pvcs := r.Kube.CoreV1().PersistentVolumeClaims(etcdNS)
	foreign := uniqueName("e2e-not-the-drivers")
	labelled := uniqueName("e2e-labelled")
	for _, p := range []*corev1.PersistentVolumeClaim{
		pvc(foreign, map[string]string{"app": "someone-else"}),
		pvc(labelled, map[string]string{rig.ManagedByLabel: rig.ManagedByValue}),
	} {
		if _, err := pvcs.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		deleteAtCleanup(t, "PVC", p.Name, pvcs.Delete)
	}
	err = asDriver.CoreV1().PersistentVolumeClaims(etcdNS).Delete(ctx, foreign, metav1.DeleteOptions{})
	switch {
	case err == nil:
		t.Errorf("the driver deleted PVC %s/%s, which lacks %s=%s", etcdNS, foreign, rig.ManagedByLabel, rig.ManagedByValue)
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Errorf("driver deleting unlabelled PVC %s: %v, want a refusal by the admission policy", foreign, err)
	case !strings.Contains(err.Error(), rig.ManagedByLabel):
		t.Errorf("refusal does not name the label the driver needs: %v", err)
	default:
		t.Logf("refused as expected: %v", err)
	}
	if _, err := pvcs.Get(ctx, foreign, metav1.GetOptions{}); err != nil {
		t.Errorf("unlabelled PVC %s after the refused delete: %v", foreign, err)
	}
	// The same request for a claim carrying the label passes: the refusal above is the policy's.
	if err := asDriver.CoreV1().PersistentVolumeClaims(etcdNS).Delete(ctx, labelled, metav1.DeleteOptions{}); err != nil {
		t.Errorf("driver deleting PVC %s labelled %s=%s: %v", labelled, rig.ManagedByLabel, rig.ManagedByValue, err)
	}
}

// manifestGrants reads manifests/rbac.yaml and returns every request its bindings grant the driver's
// ServiceAccount: the rules of ClusterRoles bound by a ClusterRoleBinding (checked cluster-wide) and
// of Roles bound by a RoleBinding (checked in the Role's namespace).
func manifestGrants() ([]access, error) {
	root, err := rig.RepoRoot()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(root, "manifests", "rbac.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	clusterRoles := map[string][]rbacv1.PolicyRule{}
	roles := map[string][]rbacv1.PolicyRule{} // namespace/name
	type binding struct {
		namespace string
		subjects  []rbacv1.Subject
		ref       rbacv1.RoleRef
	}
	var bindings []binding
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(obj) == 0 {
			continue
		}
		switch obj["kind"] {
		case "ClusterRole", "Role":
			var role rbacv1.Role // same shape as ClusterRole for what is read here
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &role); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if obj["kind"] == "ClusterRole" {
				clusterRoles[role.Name] = role.Rules
			} else {
				roles[role.Namespace+"/"+role.Name] = role.Rules
			}
		case "ClusterRoleBinding", "RoleBinding":
			var b rbacv1.RoleBinding
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &b); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			ns := b.Namespace
			if obj["kind"] == "ClusterRoleBinding" {
				ns = ""
			}
			bindings = append(bindings, binding{namespace: ns, subjects: b.Subjects, ref: b.RoleRef})
		}
	}
	var out []access
	for _, b := range bindings {
		ours := false
		for _, sub := range b.subjects {
			ours = ours || (sub.Kind == "ServiceAccount" && sub.Namespace == rig.DriverNamespace && sub.Name == rig.DriverServiceAccount)
		}
		if !ours {
			continue
		}
		var rules []rbacv1.PolicyRule
		var ok bool
		if b.ref.Kind == "ClusterRole" {
			rules, ok = clusterRoles[b.ref.Name]
		} else {
			rules, ok = roles[b.namespace+"/"+b.ref.Name]
		}
		if !ok {
			return nil, fmt.Errorf("%s: a binding of the driver's ServiceAccount names %s %s, which the file does not define", path, b.ref.Kind, b.ref.Name)
		}
		for _, rule := range rules {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					res, sub, _ := strings.Cut(res, "/")
					for _, v := range rule.Verbs {
						out = append(out, access{group: g, resource: res, subresource: sub, verb: v, namespace: b.namespace})
					}
				}
			}
		}
	}
	return out, nil
}

// reviewAccess asks the apiserver, by SubjectAccessReview, whether user in groups may make each needed
// request (missing lists those it may not) and each refused one (excess lists those it may).
func reviewAccess(t *testing.T, ctx context.Context, r *rig.Rig, user string, groups []string, needed, refused []access) (missing, excess []string) {
	t.Helper()
	review := func(a access) (bool, string) {
		t.Helper()
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: a.namespace, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource,
			},
		}}
		out, err := r.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview %s: %v", a, err)
		}
		return out.Status.Allowed, out.Status.Reason
	}
	for _, a := range needed {
		if ok, _ := review(a); !ok {
			missing = append(missing, a.String())
		}
	}
	for _, a := range refused {
		if ok, reason := review(a); ok {
			excess = append(excess, fmt.Sprintf("%s (%s)", a, reason))
		}
	}
	return missing, excess
}
