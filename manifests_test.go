package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapscheme "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/scheme"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	driverSA  = "etcd-snapshot-driver"
	driverNS  = "kube-system"
	managedBy = "app.kubernetes.io/managed-by"
)

// loadManifests strictly decodes every object of the *.yaml files in dir (not recursive), as the
// rig and `kubectl apply -f dir` read them.
func loadManifests(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(snapscheme.AddToScheme(scheme))
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	var objs []runtime.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, err := decodeManifest(decoder, doc)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs
}

// unstructuredGroups are API groups without Go types in the scheme: the schedule CRD itself, its
// custom resources and the prometheus-operator's PrometheusRule. Their documents decode as
// unstructured objects (still strict YAML: a duplicate key fails).
var unstructuredGroups = []string{"apiextensions.k8s.io/", "snapshot.etcd.io/", "monitoring.coreos.com/"}

func decodeManifest(decoder runtime.Decoder, doc []byte) (runtime.Object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	var probe struct {
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(js, &probe); err != nil {
		return nil, err
	}
	for _, g := range unstructuredGroups {
		if strings.HasPrefix(probe.APIVersion, g) {
			return runtime.Decode(unstructured.UnstructuredJSONScheme, js)
		}
	}
	obj, _, err := decoder.Decode(doc, nil, nil)
	return obj, err
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// rbacWorld answers "may the driver's ServiceAccount do verb on resource in namespace" from the
// manifests' roles and bindings, the way the RBAC authorizer does for plain rules.
type rbacWorld struct {
	clusterRoles map[string]*rbacv1.ClusterRole
	roles        map[string]*rbacv1.Role // namespace/name
	crbs         []*rbacv1.ClusterRoleBinding
	rbs          []*rbacv1.RoleBinding
}

func newRBACWorld(objs []runtime.Object) *rbacWorld {
	w := &rbacWorld{clusterRoles: map[string]*rbacv1.ClusterRole{}, roles: map[string]*rbacv1.Role{}}
	for _, o := range objs {
		switch o := o.(type) {
		case *rbacv1.ClusterRole:
			w.clusterRoles[o.Name] = o
		case *rbacv1.Role:
			w.roles[o.Namespace+"/"+o.Name] = o
		case *rbacv1.ClusterRoleBinding:
			w.crbs = append(w.crbs, o)
		case *rbacv1.RoleBinding:
			w.rbs = append(w.rbs, o)
		}
	}
	return w
}

func bindsDriver(subjects []rbacv1.Subject) bool {
	for _, s := range subjects {
		if s.Kind == "ServiceAccount" && s.Name == driverSA && s.Namespace == driverNS {
			return true
		}
	}
	return false
}

func rulesAllow(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	has := func(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }
	for _, r := range rules {
		if len(r.ResourceNames) == 0 && has(r.APIGroups, group) && has(r.Resources, resource) && has(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// allowed reports whether the driver may do verb on group/resource in namespace ("" = cluster-wide).
func (w *rbacWorld) allowed(namespace, group, resource, verb string) bool {
	for _, b := range w.crbs {
		if bindsDriver(b.Subjects) && b.RoleRef.Kind == "ClusterRole" && w.clusterRoles[b.RoleRef.Name] != nil &&
			rulesAllow(w.clusterRoles[b.RoleRef.Name].Rules, group, resource, verb) {
			return true
		}
	}
	if namespace == "" {
		return false
	}
	for _, b := range w.rbs {
		if b.Namespace != namespace || !bindsDriver(b.Subjects) {
			continue
		}
		var rules []rbacv1.PolicyRule
		switch b.RoleRef.Kind {
		case "ClusterRole":
			if cr := w.clusterRoles[b.RoleRef.Name]; cr != nil {
				rules = cr.Rules
			}
		case "Role":
			if r := w.roles[namespace+"/"+b.RoleRef.Name]; r != nil {
				rules = r.Rules
			}
		}
		if rulesAllow(rules, group, resource, verb) {
			return true
		}
	}
	return false
}

// TestManifestsRBAC checks the ServiceAccount gets every verb the driver and the csi-snapshotter use
// and none of the dangerous ones, with and without the example credentials RoleBinding.
func TestManifestsRBAC(t *testing.T) {
	base := loadManifests(t, "manifests")
	examples := loadManifests(t, filepath.Join("manifests", "examples"))
	w := newRBACWorld(base)
	withExamples := newRBACWorld(append(slices.Clone(base), examples...))

	type check struct{ ns, group, resource, verb string }
	needed := []check{
		// driver: resolution, discovery, snapshot objects, monitoring
		{"etcd-test", "", "persistentvolumeclaims", "get"}, {"", "", "persistentvolumeclaims", "list"}, {"", "", "persistentvolumeclaims", "watch"},
		{"etcd-test", "", "persistentvolumeclaims", "create"}, {"etcd-test", "", "persistentvolumeclaims", "delete"},
		{"", "", "persistentvolumes", "get"}, {"", "", "persistentvolumes", "list"}, {"", "", "persistentvolumes", "watch"}, {"", "", "persistentvolumes", "patch"},
		{"etcd-test", "", "services", "list"},
		{"etcd-test", "", "secrets", "create"}, {"etcd-test", "", "secrets", "delete"},
		{"etcd-test", "batch", "jobs", "create"}, {"etcd-test", "batch", "jobs", "get"}, {"etcd-test", "batch", "jobs", "delete"},
		{"etcd-test", "batch", "jobs", "patch"}, {"", "batch", "jobs", "list"}, {"", "batch", "jobs", "watch"},
		{"", "", "pods", "list"}, {"", "", "pods", "watch"},
		{"kube-system", "", "configmaps", "get"}, {"kube-system", "", "configmaps", "list"}, {"kube-system", "", "configmaps", "watch"},
		{"kube-system", "", "configmaps", "create"}, {"kube-system", "", "configmaps", "update"}, {"kube-system", "", "configmaps", "delete"},
		{"kube-system", "coordination.k8s.io", "leases", "get"}, {"kube-system", "coordination.k8s.io", "leases", "create"}, {"kube-system", "coordination.k8s.io", "leases", "update"},
		// dynamic groups
		{"", "groupsnapshot.storage.k8s.io", "volumegroupsnapshots", "list"}, {"", "groupsnapshot.storage.k8s.io", "volumegroupsnapshots", "watch"},
		{"etcd-test", "groupsnapshot.storage.k8s.io", "volumegroupsnapshots", "update"},
		{"", "groupsnapshot.storage.k8s.io", "volumegroupsnapshotclasses", "watch"},
		{"", "groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents", "create"},
		{"", "groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents", "delete"}, // sweeper
		{"", "snapshot.storage.k8s.io", "volumesnapshotclasses", "watch"},
		// schedules
		{"", "snapshot.etcd.io", "etcdsnapshotschedules", "list"}, {"", "snapshot.etcd.io", "etcdsnapshotschedules", "watch"},
		{"etcd-test", "snapshot.etcd.io", "etcdsnapshotschedules/status", "update"},
		{"etcd-test", "groupsnapshot.storage.k8s.io", "volumegroupsnapshots", "create"},
		{"etcd-test", "groupsnapshot.storage.k8s.io", "volumegroupsnapshots", "delete"},
		// csi-snapshotter sidecar
		{"etcd-test", "", "events", "create"}, {"etcd-test", "", "events", "patch"},
		{"", "snapshot.storage.k8s.io", "volumesnapshotcontents", "update"}, {"", "snapshot.storage.k8s.io", "volumesnapshotcontents/status", "patch"},
		{"", "groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents", "patch"}, {"", "groupsnapshot.storage.k8s.io", "volumegroupsnapshotcontents/status", "update"},
	}
	for _, c := range needed {
		if !w.allowed(c.ns, c.group, c.resource, c.verb) {
			t.Errorf("driver ServiceAccount may not %s %s.%s in %q", c.verb, c.resource, c.group, c.ns)
		}
	}
	// The sidecar's role covers these too; the driver's own role must, so each verb keeps its reason.
	driverRole := w.clusterRoles["etcd-snapshot-driver"]
	if driverRole == nil {
		t.Fatal("no ClusterRole etcd-snapshot-driver")
	}
	for _, c := range []check{
		// member readiness re-check (driver/memberready.go)
		{"", "snapshot.storage.k8s.io", "volumesnapshotcontents", "get"}, {"", "snapshot.storage.k8s.io", "volumesnapshotcontents", "patch"},
	} {
		if !rulesAllow(driverRole.Rules, c.group, c.resource, c.verb) {
			t.Errorf("ClusterRole etcd-snapshot-driver does not allow %s %s.%s", c.verb, c.resource, c.group)
		}
	}
	forbidden := []check{
		{"", "", "secrets", "get"}, {"", "", "secrets", "list"}, {"", "", "secrets", "watch"}, {"", "", "secrets", "patch"}, {"", "", "secrets", "update"},
		{"etcd-test", "", "secrets", "get"},
		{"default", "", "configmaps", "get"}, {"default", "", "configmaps", "delete"},
		{"etcd-test", "", "pods", "create"}, {"etcd-test", "", "pods", "delete"}, {"etcd-test", "", "persistentvolumeclaims", "update"},
		{"", "", "persistentvolumes", "delete"}, {"", "", "persistentvolumeclaims", "deletecollection"},
		{"etcd-test", "batch", "jobs", "update"},
		{"default", "coordination.k8s.io", "leases", "create"}, {"kube-system", "coordination.k8s.io", "leases", "delete"},
	}
	for _, c := range forbidden {
		if w.allowed(c.ns, c.group, c.resource, c.verb) {
			t.Errorf("driver ServiceAccount may %s %s.%s in %q; it must not", c.verb, c.resource, c.group, c.ns)
		}
	}
	// The example RoleBinding grants reading the credentials in etcd-test only.
	if !withExamples.allowed("etcd-test", "", "secrets", "get") {
		t.Error("the example RoleBinding does not let the sidecar read Secrets in etcd-test")
	}
	for _, c := range []check{{"", "", "secrets", "get"}, {"default", "", "secrets", "get"}, {"etcd-test", "", "secrets", "list"}} {
		if withExamples.allowed(c.ns, c.group, c.resource, c.verb) {
			t.Errorf("with the example RoleBinding the driver may %s secrets in %q", c.verb, c.ns)
		}
	}
}

// TestManifestsDeployment checks the objects the rig and users apply: namespace, pod shape, probes,
// security settings and the names that must agree with the driver's defaults.
func TestManifestsDeployment(t *testing.T) {
	objs := loadManifests(t, "manifests")
	var fs = commandLine()
	var o options
	registerFlags(fs, &o)
	driverName := fs.Lookup("driver-name").DefValue
	kinds := map[string]int{}
	for _, obj := range objs {
		kind := obj.GetObjectKind().GroupVersionKind().Kind
		kinds[kind]++
		switch o := obj.(type) {
		case *corev1.Namespace:
			t.Errorf("manifests/ must not create a Namespace (%s)", o.Name)
		case *corev1.ServiceAccount:
			if o.Name != driverSA || o.Namespace != driverNS {
				t.Errorf("ServiceAccount %s/%s", o.Namespace, o.Name)
			}
		case *rbacv1.Role:
			if o.Namespace != driverNS {
				t.Errorf("Role %s in namespace %q", o.Name, o.Namespace)
			}
		case *rbacv1.RoleBinding:
			if o.Namespace != driverNS {
				t.Errorf("RoleBinding %s in namespace %q (per-namespace bindings belong in examples/)", o.Name, o.Namespace)
			}
		case *storagev1.CSIDriver:
			if o.Name != driverName || o.Spec.AttachRequired == nil || *o.Spec.AttachRequired {
				t.Errorf("CSIDriver %s attachRequired=%v", o.Name, o.Spec.AttachRequired)
			}
		case *admissionv1.ValidatingAdmissionPolicy:
			checkAdmissionPolicy(t, o)
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			if len(o.Spec.ValidationActions) != 1 || o.Spec.ValidationActions[0] != admissionv1.Deny {
				t.Errorf("policy binding %s validationActions %v, want [Deny]", o.Name, o.Spec.ValidationActions)
			}
		case *appsv1.Deployment:
			checkDeployment(t, o)
		}
	}
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "CSIDriver",
		"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "Deployment", "CustomResourceDefinition", "PodDisruptionBudget"} {
		if kinds[kind] == 0 {
			t.Errorf("manifests/ has no %s", kind)
		}
	}
}

// admissionPolicies are the policies of manifests/admission-policy.yaml: the operations each matches and
// the resources it must cover (group/resource). What they refuse is proven on the rig by
// TestE2EAdmissionRefusesForgedObjects.
var admissionPolicies = map[string]struct {
	ops       []admissionv1.OperationType
	resources []string
}{
	"etcd-snapshot-driver-deletes-only-its-objects":  {[]admissionv1.OperationType{admissionv1.Delete}, []string{"/persistentvolumeclaims", "/secrets", "/configmaps", "batch/jobs", "groupsnapshot.storage.k8s.io/volumegroupsnapshotcontents"}},
	"etcd-snapshot-driver-jobs-in-shape":             {[]admissionv1.OperationType{admissionv1.Create, admissionv1.Update}, []string{"batch/jobs"}},
	"etcd-snapshot-driver-secrets-and-pvcs-in-shape": {[]admissionv1.OperationType{admissionv1.Create, admissionv1.Update}, []string{"/secrets", "/persistentvolumeclaims"}},
	"etcd-snapshot-driver-configmaps-are-records":    {[]admissionv1.OperationType{admissionv1.Create, admissionv1.Update}, []string{"/configmaps"}},
	"etcd-snapshot-driver-volumes-of-snapshots":      {[]admissionv1.OperationType{admissionv1.Update}, []string{"/persistentvolumes"}},
}

func checkAdmissionPolicy(t *testing.T, p *admissionv1.ValidatingAdmissionPolicy) {
	t.Helper()
	want, known := admissionPolicies[p.Name]
	if !known {
		t.Errorf("policy %s is not one this test knows; add it to admissionPolicies", p.Name)
		return
	}
	if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionv1.Fail {
		t.Errorf("policy %s failurePolicy %v, want Fail", p.Name, p.Spec.FailurePolicy)
	}
	covered := map[string]bool{}
	for _, r := range p.Spec.MatchConstraints.ResourceRules {
		if !slices.Equal(r.Operations, want.ops) {
			t.Errorf("policy %s matches operations %v, want %v", p.Name, r.Operations, want.ops)
		}
		for _, res := range r.Resources {
			covered[r.APIGroups[0]+"/"+res] = true
		}
	}
	for _, res := range want.resources {
		if !covered[res] {
			t.Errorf("policy %s does not cover %s", p.Name, res)
		}
	}
	if !slices.ContainsFunc(p.Spec.MatchConditions, func(c admissionv1.MatchCondition) bool {
		return strings.Contains(c.Expression, "system:serviceaccount:"+driverNS+":"+driverSA)
	}) {
		t.Errorf("policy %s is not limited to the driver's ServiceAccount: %v", p.Name, p.Spec.MatchConditions)
	}
	if len(p.Spec.Validations) == 0 {
		t.Errorf("policy %s validates nothing", p.Name)
	}
	if want.ops[0] == admissionv1.Delete && !slices.ContainsFunc(p.Spec.Validations, func(v admissionv1.Validation) bool {
		return strings.Contains(v.Expression, managedBy) && strings.Contains(v.Expression, "oldObject")
	}) {
		t.Errorf("policy %s does not check the %s label of the deleted object", p.Name, managedBy)
	}
}

func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	if d.Namespace != driverNS || spec.ServiceAccountName != driverSA {
		t.Errorf("Deployment %s/%s runs as %q", d.Namespace, d.Name, spec.ServiceAccountName)
	}
	// Two replicas, each serving CSI; the Leases (the driver's and the sidecar's) pick who acts.
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment must run 2 replicas, got %v", d.Spec.Replicas)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod must run as a non-root user: %+v", psc)
	}
	socketVolume := ""
	for _, v := range spec.Volumes {
		if v.EmptyDir != nil {
			socketVolume = v.Name
		}
	}
	if socketVolume == "" {
		t.Fatal("no emptyDir volume for the socket")
	}
	containers := map[string]corev1.Container{}
	for _, c := range spec.Containers {
		containers[c.Name] = c
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: readOnlyRootFilesystem and no privilege escalation required", c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("container %s has no cpu/memory requests", c.Name)
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.Name == socketVolume && m.MountPath == "/csi")
		}
		if !mounted {
			t.Errorf("container %s does not mount the socket emptyDir at /csi", c.Name)
		}
	}
	driver, ok := containers["etcd-snapshot-driver"]
	if !ok {
		t.Fatal("no etcd-snapshot-driver container")
	}
	args := strings.Join(driver.Args, " ")
	if !strings.Contains(args, "-endpoint=unix:///csi/csi.sock") || !strings.Contains(args, "-http-address=:8080") || !strings.Contains(args, "-leader-election=true") {
		t.Errorf("driver args %q", args)
	}
	if !slices.ContainsFunc(driver.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	}) {
		t.Errorf("driver container lacks POD_NAME from metadata.name (its identity in the leader Lease)")
	}
	if driver.LivenessProbe == nil || driver.LivenessProbe.HTTPGet == nil || driver.LivenessProbe.HTTPGet.Path != "/healthz" ||
		driver.ReadinessProbe == nil || driver.ReadinessProbe.HTTPGet == nil || driver.ReadinessProbe.HTTPGet.Path != "/ready" {
		t.Errorf("driver probes must hit /healthz and /ready")
	}
	sidecar, ok := containers["csi-snapshotter"]
	if !ok {
		t.Fatal("no csi-snapshotter container")
	}
	if sidecar.Image != "registry.k8s.io/sig-storage/csi-snapshotter:v8.7.0" {
		t.Errorf("sidecar image %s", sidecar.Image)
	}
	for _, want := range []string{"--csi-address=/csi/csi.sock", "--feature-gates=CSIVolumeGroupSnapshot=true", "--leader-election=true", "--leader-election-namespace=kube-system"} {
		if !slices.Contains(sidecar.Args, want) {
			t.Errorf("sidecar args %q lack %s", sidecar.Args, want)
		}
	}
}

// TestManifestExamples checks the example classes name the driver and the credentials Secret the
// rig creates (main-client-tls in etcd-test: tools/rig/etcdstatefulset.go SecretName).
func TestManifestExamples(t *testing.T) {
	var fs = commandLine()
	var o options
	registerFlags(fs, &o)
	driverName := fs.Lookup("driver-name").DefValue
	var group, single int
	for _, obj := range loadManifests(t, filepath.Join("manifests", "examples")) {
		switch o := obj.(type) {
		case *groupsnapshotv1.VolumeGroupSnapshotClass:
			group++
			if o.Driver != driverName || o.Parameters["csi.storage.k8s.io/group-snapshotter-secret-name"] != "main-client-tls" ||
				o.Parameters["csi.storage.k8s.io/group-snapshotter-secret-namespace"] != "etcd-test" {
				t.Errorf("VolumeGroupSnapshotClass %s: driver %s parameters %v", o.Name, o.Driver, o.Parameters)
			}
		case *snapshotv1.VolumeSnapshotClass:
			single++
			if o.Driver != driverName || o.Parameters["csi.storage.k8s.io/snapshotter-secret-name"] != "main-client-tls" ||
				o.Parameters["csi.storage.k8s.io/snapshotter-secret-namespace"] != "etcd-test" {
				t.Errorf("VolumeSnapshotClass %s: driver %s parameters %v", o.Name, o.Driver, o.Parameters)
			}
		}
	}
	if group != 1 || single != 1 {
		t.Errorf("%d VolumeGroupSnapshotClasses and %d VolumeSnapshotClasses, want one of each", group, single)
	}
}

// TestManifestsScheduleCRD checks the EtcdSnapshotSchedule CRD the driver's schedule controller reads:
// names, a namespaced v1alpha1 with a status subresource, the printer columns and the CEL rules the
// issue asks for (the rig applies it to a real API server, which compiles the rules).
func TestManifestsScheduleCRD(t *testing.T) {
	var crd *unstructured.Unstructured
	for _, obj := range loadManifests(t, "manifests") {
		if u, ok := obj.(*unstructured.Unstructured); ok && u.GetKind() == "CustomResourceDefinition" && u.GetName() == "etcdsnapshotschedules.snapshot.etcd.io" {
			crd = u
		}
	}
	if crd == nil {
		t.Fatal("manifests/ has no CustomResourceDefinition etcdsnapshotschedules.snapshot.etcd.io")
	}
	str := func(fields ...string) string { v, _, _ := unstructured.NestedString(crd.Object, fields...); return v }
	if str("spec", "group") != "snapshot.etcd.io" || str("spec", "scope") != "Namespaced" || str("spec", "names", "kind") != "EtcdSnapshotSchedule" {
		t.Errorf("CRD group %q scope %q kind %q", str("spec", "group"), str("spec", "scope"), str("spec", "names", "kind"))
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	if len(versions) != 1 {
		t.Fatalf("%d versions, want v1alpha1 only", len(versions))
	}
	v := versions[0].(map[string]any)
	if v["name"] != "v1alpha1" || v["served"] != true || v["storage"] != true {
		t.Errorf("version %v served %v storage %v", v["name"], v["served"], v["storage"])
	}
	if _, ok, _ := unstructured.NestedMap(v, "subresources", "status"); !ok {
		t.Error("no status subresource")
	}
	var columns []string
	cols, _, _ := unstructured.NestedSlice(v, "additionalPrinterColumns")
	for _, c := range cols {
		columns = append(columns, strings.ToUpper(c.(map[string]any)["name"].(string)))
	}
	if want := []string{"SCHEDULE", "SUSPEND", "LAST SUCCESS", "NEXT", "READY SNAPSHOTS", "AGE"}; !slices.Equal(columns, want) {
		t.Errorf("printer columns %v, want %v", columns, want)
	}
	schema, _, _ := unstructured.NestedMap(v, "schema", "openAPIV3Schema")
	rules := func(fields ...string) string {
		path := []string{}
		for _, f := range fields {
			path = append(path, "properties", f)
		}
		list, _, _ := unstructured.NestedSlice(schema, append(path, "x-kubernetes-validations")...)
		var out []string
		for _, r := range list {
			out = append(out, r.(map[string]any)["rule"].(string))
		}
		return strings.Join(out, "\n")
	}
	if r := rules("spec", "source"); !strings.Contains(r, "has(self.selector) != has(self.cluster)") {
		t.Errorf("spec.source has no exactly-one rule: %q", r)
	}
	if r := rules("spec", "schedule"); !strings.Contains(r, "TZ=") {
		t.Errorf("spec.schedule does not refuse TZ=: %q", r)
	}
	keep, _, _ := unstructured.NestedMap(schema, "properties", "spec", "properties", "retention", "properties", "keep")
	if keep["minimum"] != int64(1) && keep["minimum"] != float64(1) || keep["default"] != int64(7) && keep["default"] != float64(7) {
		t.Errorf("retention.keep %v, want minimum 1 and default 7", keep)
	}
}

// TestManifestExampleSchedule checks the example schedule uses the example class and lives in the
// namespace whose credentials that class names, so applying manifests/examples/ gives a working schedule.
func TestManifestExampleSchedule(t *testing.T) {
	var class *groupsnapshotv1.VolumeGroupSnapshotClass
	var schedules []*unstructured.Unstructured
	for _, obj := range loadManifests(t, filepath.Join("manifests", "examples")) {
		switch o := obj.(type) {
		case *groupsnapshotv1.VolumeGroupSnapshotClass:
			class = o
		case *unstructured.Unstructured:
			if o.GetKind() == "EtcdSnapshotSchedule" {
				schedules = append(schedules, o)
			}
		}
	}
	if class == nil || len(schedules) != 1 {
		t.Fatalf("examples: class %v, %d EtcdSnapshotSchedules; want one of each", class, len(schedules))
	}
	s := schedules[0]
	className, _, _ := unstructured.NestedString(s.Object, "spec", "volumeGroupSnapshotClassName")
	if className != class.Name || s.GetNamespace() != class.Parameters["csi.storage.k8s.io/group-snapshotter-secret-namespace"] {
		t.Errorf("schedule %s/%s names class %q; want %q in namespace %s", s.GetNamespace(), s.GetName(), className, class.Name,
			class.Parameters["csi.storage.k8s.io/group-snapshotter-secret-namespace"])
	}
	if s.GetAPIVersion() != "snapshot.etcd.io/v1alpha1" {
		t.Errorf("schedule apiVersion %s", s.GetAPIVersion())
	}
}
