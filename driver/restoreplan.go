package driver

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// plannedMember is one etcd member a restore writes: its name and peer URL for etcdutl, and the PVC
// holding its data directory.
type plannedMember struct {
	Name    string
	PeerURL string
	PVC     string
	// Ordinal is the StatefulSet ordinal of Name, -1 when the name does not follow that convention.
	Ordinal int
}

// ordinalSuffix matches a StatefulSet pod name: <statefulset>-<ordinal>.
var ordinalSuffix = regexp.MustCompile(`^(.+)-(0|[1-9][0-9]*)$`)

// splitOrdinal splits a StatefulSet pod (member) name into the StatefulSet name and the ordinal.
func splitOrdinal(name string) (set string, ordinal int, ok bool) {
	m := ordinalSuffix.FindStringSubmatch(name)
	if m == nil {
		return "", -1, false
	}
	n, err := strconv.Atoi(m[2])
	if err != nil {
		return "", -1, false
	}
	return m[1], n, true
}

// voters returns the record's voting members: learners are not part of a restored cluster (etcdutl
// makes every --initial-cluster member a voter), they rejoin as learners afterwards.
func voters(rec *Record) []MemberRecord {
	var out []MemberRecord
	for _, m := range rec.Members {
		if !m.IsLearner {
			out = append(out, m)
		}
	}
	return out
}

// claimTemplateOf finds the volumeClaimTemplate name behind the record's source PVCs: a StatefulSet
// names the claim of pod <member> "<template>-<member>". Every source must agree on it.
func claimTemplateOf(rec *Record) (string, error) {
	template := ""
	for _, s := range rec.Sources {
		found := ""
		for _, m := range rec.Members {
			if t, ok := strings.CutSuffix(s.PVC, "-"+m.Name); ok && t != "" {
				found = t
				break
			}
		}
		if found == "" {
			return "", fmt.Errorf("PVC %q is not named <template>-<member> after any member of the snapshot (%s)", s.PVC, memberNames(rec.Members))
		}
		if template != "" && template != found {
			return "", fmt.Errorf("PVCs %q and %q follow different claim templates (%q, %q)", rec.Sources[0].PVC, s.PVC, template, found)
		}
		template = found
	}
	if template == "" {
		return "", fmt.Errorf("the snapshot records no source PVC")
	}
	return template, nil
}

func memberNames(ms []MemberRecord) string {
	names := make([]string, 0, len(ms))
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return strings.Join(names, ", ")
}

// planInPlace maps every voting member of the snapshot to the PVC it is restored into, in the
// snapshot's own namespace. explicit (member name -> PVC, from -member-pvc) wins; otherwise the
// StatefulSet convention decides (claim data-main-1 is member main-1), and when it cannot, the error
// shows the flag that sets the mapping.
func planInPlace(rec *Record, explicit map[string]string) ([]plannedMember, error) {
	vs := voters(rec)
	if len(vs) == 0 {
		return nil, fmt.Errorf("snapshot %s records no voting member", rec.ID)
	}
	for name := range explicit {
		if !slices.ContainsFunc(vs, func(m MemberRecord) bool { return m.Name == name }) {
			return nil, fmt.Errorf("-member-pvc names member %q, which is not a voting member of snapshot %s (%s)", name, rec.ID, memberNames(vs))
		}
	}
	template := ""
	if len(explicit) < len(vs) {
		t, err := claimTemplateOf(rec)
		if err != nil {
			return nil, fmt.Errorf("cannot tell which PVC holds which member: %v; set the mapping with -member-pvc %s", err, mappingExample(vs))
		}
		template = t
	}
	var out []plannedMember
	seen := map[string]string{}
	for _, m := range vs {
		pvc := explicit[m.Name]
		if pvc == "" {
			pvc = template + "-" + m.Name
		}
		if other, dup := seen[pvc]; dup {
			return nil, fmt.Errorf("members %q and %q map to the same PVC %q; set the mapping with -member-pvc %s", other, m.Name, pvc, mappingExample(vs))
		}
		seen[pvc] = m.Name
		if len(m.PeerURLs) == 0 {
			return nil, fmt.Errorf("snapshot %s records no peer URL for member %q", rec.ID, m.Name)
		}
		_, ord, ok := splitOrdinal(m.Name)
		if !ok {
			ord = -1
		}
		out = append(out, plannedMember{Name: m.Name, PeerURL: m.PeerURLs[0], PVC: pvc, Ordinal: ord})
	}
	return out, nil
}

func mappingExample(vs []MemberRecord) string {
	parts := make([]string, 0, len(vs))
	for _, m := range vs {
		parts = append(parts, m.Name+"=<pvc>")
	}
	return strings.Join(parts, ",")
}

// newClusterSpec describes the members of a new cluster restored into fresh PVCs.
type newClusterSpec struct {
	Namespace     string
	StatefulSet   string
	Service       string
	ClaimTemplate string
	Members       int
	// PeerURLTemplate expands {name}, {ordinal}, {statefulset}, {service} and {namespace}.
	PeerURLTemplate string
	// PeerURLs (member name -> URL) win over the template.
	PeerURLs map[string]string
}

// planNewCluster names the members <statefulset>-<i> and their PVCs <template>-<statefulset>-<i>, as
// a StatefulSet with that volumeClaimTemplate will look for them.
func planNewCluster(s newClusterSpec) ([]plannedMember, error) {
	if s.Members < 1 {
		return nil, fmt.Errorf("-members must be at least 1, got %d", s.Members)
	}
	if s.StatefulSet == "" || s.ClaimTemplate == "" {
		return nil, fmt.Errorf("a new cluster needs -statefulset and -claim-template")
	}
	var out []plannedMember
	for i := 0; i < s.Members; i++ {
		name := fmt.Sprintf("%s-%d", s.StatefulSet, i)
		u := s.PeerURLs[name]
		if u == "" {
			if s.PeerURLTemplate == "" {
				return nil, fmt.Errorf("no peer URL for member %q: set -peer-url-template or -peer-urls %s=<url>", name, name)
			}
			var err error
			if u, err = expandPeerURL(s.PeerURLTemplate, map[string]string{
				"name": name, "ordinal": strconv.Itoa(i), "statefulset": s.StatefulSet, "service": s.Service, "namespace": s.Namespace,
			}); err != nil {
				return nil, err
			}
		}
		if err := checkPeerURL(name, u); err != nil {
			return nil, err
		}
		out = append(out, plannedMember{Name: name, PeerURL: u, PVC: s.ClaimTemplate + "-" + name, Ordinal: i})
	}
	for name := range s.PeerURLs {
		if !slices.ContainsFunc(out, func(m plannedMember) bool { return m.Name == name }) {
			return nil, fmt.Errorf("-peer-urls names member %q, which the new cluster does not have (members %s-0 to %s-%d)", name, s.StatefulSet, s.StatefulSet, s.Members-1)
		}
	}
	return out, nil
}

// envRef is a $(VAR) reference in a container's command, args or env.
var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

// expandPeerURL fills a template such as https://{name}.{service}.{namespace}.svc:2380; an unknown
// or empty placeholder is an error, so a typo never becomes a URL etcd cannot be reached on.
func expandPeerURL(template string, vars map[string]string) (string, error) {
	var bad error
	out := placeholder.ReplaceAllStringFunc(template, func(p string) string {
		key := p[1 : len(p)-1]
		v, ok := vars[key]
		switch {
		case !ok:
			bad = fmt.Errorf("-peer-url-template %q: unknown placeholder %s (known: {name}, {ordinal}, {statefulset}, {service}, {namespace})", template, p)
		case v == "":
			bad = fmt.Errorf("-peer-url-template %q: placeholder %s has no value", template, p)
		}
		return v
	})
	if bad != nil {
		return "", bad
	}
	return out, nil
}

// checkPeerURL refuses what etcd would refuse as --initial-advertise-peer-urls.
func checkPeerURL(member, u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || p.Port() == "" || (p.Path != "" && p.Path != "/") {
		return fmt.Errorf("peer URL %q of member %q is not scheme://host:port with scheme http or https", u, member)
	}
	return nil
}

// initialCluster is the --initial-cluster value every member is restored with.
func initialCluster(ms []plannedMember) string {
	parts := make([]string, 0, len(ms))
	for _, m := range ms {
		parts = append(parts, m.Name+"="+m.PeerURL)
	}
	return strings.Join(parts, ",")
}

// planRestore works out members, PVCs, the data dir layout and the restore id, reading (never
// changing) the cluster.
func planRestore(ctx context.Context, cfg RestoreConfig, src *restoreSource) (*restorePlan, error) {
	rec := src.Record
	p := &restorePlan{
		Record: rec, Source: src, BumpRevision: cfg.BumpRevision, DeleteOldData: cfg.DeleteOldData,
		EtcdImage: cfg.EtcdImage, DriverImage: cfg.DriverImage, ClusterLabel: cfg.ClusterLabel,
	}
	var err error
	if cfg.TargetNamespace == "" {
		p.InPlace, p.Namespace = true, rec.Namespace
		if p.Members, err = planInPlace(rec, cfg.MemberPVCs); err != nil {
			return nil, err
		}
		if p.StatefulSet, err = owningStatefulSet(ctx, cfg.Kube, rec.Namespace, p.Members); err != nil {
			return nil, err
		}
	} else {
		if p.NewPVC, err = newClusterPVCTemplate(ctx, cfg, rec); err != nil {
			return nil, err
		}
		spec := newClusterSpec{
			Namespace: cfg.TargetNamespace, StatefulSet: cfg.StatefulSet, ClaimTemplate: cfg.ClaimTemplate,
			Members: cfg.Members, PeerURLTemplate: cfg.PeerURLTemplate, PeerURLs: cfg.PeerURLs, Service: cfg.Service,
		}
		if err := defaultNewClusterSpec(&spec, rec); err != nil {
			return nil, err
		}
		p.Namespace, p.NewCluster = cfg.TargetNamespace, spec.StatefulSet
		if p.Members, err = planNewCluster(spec); err != nil {
			return nil, err
		}
		// The target StatefulSet may already exist (applied with replicas 0): it tells the layout.
		sts, err := cfg.Kube.AppsV1().StatefulSets(p.Namespace).Get(ctx, spec.StatefulSet, metav1.GetOptions{})
		switch {
		case err == nil:
			p.StatefulSet = sts
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("StatefulSet %s/%s: %w", p.Namespace, spec.StatefulSet, err)
		}
	}
	if err := p.resolveLayout(ctx, cfg); err != nil {
		return nil, err
	}
	p.InitialCluster = initialCluster(p.Members)
	p.SnapshotClaim = snapshotPVCName(rec.ID)
	gone, err := snapshotClaimGone(ctx, cfg.Kube, rec)
	if err != nil {
		return nil, err
	}
	if p.Namespace != rec.Namespace || gone {
		p.snapshotViewRequired = true
	}
	if err := p.resolveRestoreID(ctx, cfg); err != nil {
		return nil, err
	}
	if p.snapshotViewRequired {
		p.SnapshotClaim = snapshotViewName(p.ID)
	}
	p.Token = "etcd-restore-" + p.ID
	return p, nil
}

// defaultNewClusterSpec fills a new cluster's names from the snapshot's own cluster.
func defaultNewClusterSpec(s *newClusterSpec, rec *Record) error {
	if s.StatefulSet == "" || s.ClaimTemplate == "" {
		var set string
		if vs := voters(rec); len(vs) > 0 {
			set, _, _ = splitOrdinal(vs[0].Name)
		}
		template, _ := claimTemplateOf(rec)
		if s.StatefulSet == "" {
			s.StatefulSet = set
		}
		if s.ClaimTemplate == "" {
			s.ClaimTemplate = template
		}
		if s.StatefulSet == "" || s.ClaimTemplate == "" {
			return errors.New("cannot derive the new cluster's names from the snapshot's members; set -statefulset and -claim-template")
		}
	}
	if s.Members == 0 {
		s.Members = len(voters(rec))
	}
	if s.Service == "" {
		s.Service = s.StatefulSet
	}
	if s.PeerURLTemplate == "" {
		s.PeerURLTemplate = DefaultPeerURLTemplate
	}
	return nil
}

// newClusterPVCTemplate is the PVC each new member gets: the source PVCs' class and size unless the
// flags say otherwise.
func newClusterPVCTemplate(ctx context.Context, cfg RestoreConfig, rec *Record) (*corev1.PersistentVolumeClaim, error) {
	pvc := &corev1.PersistentVolumeClaim{Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
	}}
	var source *corev1.PersistentVolumeClaim
	if len(rec.Sources) > 0 {
		s, err := cfg.Kube.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, rec.Sources[0].PVC, metav1.GetOptions{})
		if err == nil {
			source = s
		}
	}
	switch {
	case cfg.Size != "":
		pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(cfg.Size)}
	case source != nil:
		pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: source.Spec.Resources.Requests[corev1.ResourceStorage]}
	default:
		return nil, fmt.Errorf("the source PVC %s/%s is gone, so the new PVCs' size is unknown; set -size", rec.Namespace, rec.Sources[0].PVC)
	}
	switch {
	case cfg.StorageClass != "":
		pvc.Spec.StorageClassName = ptr.To(cfg.StorageClass)
	case source != nil && source.Spec.StorageClassName != nil && *source.Spec.StorageClassName != "":
		pvc.Spec.StorageClassName = ptr.To(*source.Spec.StorageClassName)
	}
	return pvc, nil
}

// owningStatefulSet finds the StatefulSet whose pods are the members (<set>-<ordinal>); nil when the
// members do not follow that convention or no such StatefulSet exists.
func owningStatefulSet(ctx context.Context, kube kubernetes.Interface, ns string, ms []plannedMember) (*appsv1.StatefulSet, error) {
	set := ""
	for _, m := range ms {
		s, _, ok := splitOrdinal(m.Name)
		if !ok || (set != "" && s != set) {
			return nil, nil
		}
		set = s
	}
	sts, err := kube.AppsV1().StatefulSets(ns).Get(ctx, set, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("StatefulSet %s/%s: %w", ns, set, err)
	}
	return sts, nil
}
