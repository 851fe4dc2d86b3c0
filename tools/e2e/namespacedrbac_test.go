package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2ENamespacedRBAC installs the alternative RBAC of manifests/namespaced/ for a ServiceAccount of
// its own (every object renamed, so the rig's install is untouched) and checks with the apiserver's
// SubjectAccessReviews that it grants, in the etcd namespace, everything manifests/rbac.yaml grants
// the driver, while the driver's writes (Jobs, Secrets, PVCs) are refused in any other namespace,
// where the ClusterRole install allows them.
func TestE2ENamespacedRBAC(t *testing.T) {
	r, ctx := setup(t)
	etcdNS, otherNS := r.Namespace, "default"
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	suffix := "e2e-" + hex.EncodeToString(b)
	sa := rig.DriverServiceAccount + "-" + suffix
	if _, err := r.Kube.CoreV1().ServiceAccounts(rig.DriverNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deleteAtCleanup(t, "ServiceAccount", sa, r.Kube.CoreV1().ServiceAccounts(rig.DriverNamespace).Delete)
	if err := installNamespacedRBAC(t, r, suffix, sa); err != nil {
		t.Fatal(err)
	}

	namespaced, err := namespacedResources(r)
	if err != nil {
		t.Fatal(err)
	}
	review := func(user string, a access) bool {
		t.Helper()
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + rig.DriverNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: a.namespace, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource,
			},
		}}
		out, err := r.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview %s: %v", a, err)
		}
		return out.Status.Allowed
	}
	user := "system:serviceaccount:" + rig.DriverNamespace + ":" + sa

	// Parity in the etcd namespace: every grant of manifests/rbac.yaml, a namespaced resource checked
	// there (or in its Role's namespace), a cluster-scoped one cluster-wide.
	grants, err := manifestGrants()
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, a := range grants {
		if a.namespace == "" && namespaced[a.group+"/"+a.resource] {
			a.namespace = etcdNS
		}
		if !review(user, a) {
			missing = append(missing, a.String())
		}
	}
	if len(missing) > 0 {
		t.Errorf("manifests/namespaced/ does not grant what the driver needs in %s:\n  %s", etcdNS, strings.Join(missing, "\n  "))
	}

	// The scoping: the writes that could run a pod or plant an object are refused outside the etcd
	// namespace, and the ClusterRole install would allow each of them.
	var writes []access
	writes = append(writes, verbs("batch", "jobs", otherNS, "create", "delete", "patch")...)
	writes = append(writes, verbs("", "secrets", otherNS, "create", "delete")...)
	writes = append(writes, verbs("", "persistentvolumeclaims", otherNS, "create", "delete")...)
	writes = append(writes, access{resource: "secrets", verb: "get", namespace: otherNS})
	for _, a := range writes {
		if review(user, a) {
			t.Errorf("the per-namespace install allows %s", a)
		}
		if a.verb != "get" && !review(rig.DriverUser, a) {
			t.Errorf("the ClusterRole install refuses %s, so the refusal above shows nothing", a)
		}
	}
	// What stays cluster-wide, as manifests/README.md's threat model says: reading Jobs and pods (the
	// driver's informers) and PVCs.
	for _, a := range []access{{group: "batch", resource: "jobs", verb: "list"}, {resource: "pods", verb: "watch"}, {resource: "persistentvolumeclaims", verb: "list"}} {
		if !review(user, a) {
			t.Errorf("the per-namespace install refuses %s, which the driver's informers need", a)
		}
	}
	t.Logf("%d grants of manifests/rbac.yaml held in %s, %d writes refused in %s", len(grants), etcdNS, len(writes), otherNS)
}

// installNamespacedRBAC creates every object of manifests/namespaced/*.yaml with suffix added to its
// name and to role references, and ServiceAccount sa as the subject, and removes them at clean-up.
func installNamespacedRBAC(t *testing.T, r *rig.Rig, suffix, sa string) error {
	root, err := rig.RepoRoot()
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(root, "manifests", "namespaced", "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no manifests/namespaced/*.yaml (%v)", err)
	}
	ctx := cleanupContext(t)
	rbac := r.Kube.RbacV1()
	subjects := func(in []rbacv1.Subject) []rbacv1.Subject {
		out := append([]rbacv1.Subject(nil), in...)
		for i := range out {
			if out[i].Kind == "ServiceAccount" && out[i].Name == rig.DriverServiceAccount && out[i].Namespace == rig.DriverNamespace {
				out[i].Name = sa
			}
		}
		return out
	}
	rename := func(m *metav1.ObjectMeta) { m.Name += "-" + suffix; m.ResourceVersion = "" }
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return fmt.Errorf("%s: %w", file, err)
			}
			if len(obj) == 0 {
				continue
			}
			var created func() error
			switch obj["kind"] {
			case "ClusterRole":
				var o rbacv1.ClusterRole
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &o); err != nil {
					return err
				}
				rename(&o.ObjectMeta)
				created = func() error { _, err := rbac.ClusterRoles().Create(ctx, &o, metav1.CreateOptions{}); return err }
				t.Cleanup(func() { _ = rbac.ClusterRoles().Delete(cleanupContext(t), o.Name, metav1.DeleteOptions{}) })
			case "ClusterRoleBinding":
				var o rbacv1.ClusterRoleBinding
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &o); err != nil {
					return err
				}
				rename(&o.ObjectMeta)
				o.RoleRef.Name += "-" + suffix
				o.Subjects = subjects(o.Subjects)
				created = func() error { _, err := rbac.ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{}); return err }
				t.Cleanup(func() { _ = rbac.ClusterRoleBindings().Delete(cleanupContext(t), o.Name, metav1.DeleteOptions{}) })
			case "Role":
				var o rbacv1.Role
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &o); err != nil {
					return err
				}
				rename(&o.ObjectMeta)
				created = func() error { _, err := rbac.Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{}); return err }
				t.Cleanup(func() { _ = rbac.Roles(o.Namespace).Delete(cleanupContext(t), o.Name, metav1.DeleteOptions{}) })
			case "RoleBinding":
				var o rbacv1.RoleBinding
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &o); err != nil {
					return err
				}
				rename(&o.ObjectMeta)
				o.RoleRef.Name += "-" + suffix
				o.Subjects = subjects(o.Subjects)
				if o.Namespace == rig.DefaultNamespace {
					o.Namespace = r.Namespace
				}
				created = func() error {
					_, err := rbac.RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
					return err
				}
				t.Cleanup(func() { _ = rbac.RoleBindings(o.Namespace).Delete(cleanupContext(t), o.Name, metav1.DeleteOptions{}) })
			default:
				return fmt.Errorf("%s: unexpected %v in an RBAC install", file, obj["kind"])
			}
			if err := created(); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
		}
	}
	return nil
}

// namespacedResources asks the apiserver's discovery which resources are namespaced, keyed group/resource.
func namespacedResources(r *rig.Rig) (map[string]bool, error) {
	_, lists, err := r.Kube.Discovery().ServerGroupsAndResources()
	if err != nil && len(lists) == 0 {
		return nil, err
	}
	out := map[string]bool{}
	for _, l := range lists {
		group := ""
		if gv := strings.Split(l.GroupVersion, "/"); len(gv) == 2 {
			group = gv[0]
		}
		for _, res := range l.APIResources {
			if !strings.Contains(res.Name, "/") {
				out[group+"/"+res.Name] = res.Namespaced
			}
		}
	}
	return out, nil
}
