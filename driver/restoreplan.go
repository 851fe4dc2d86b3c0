package driver

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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

// memberLayout is where etcd keeps its data inside a member's volume and as whom it runs.
type memberLayout struct {
	// DataDir is the data directory relative to the volume's root, e.g. "data".
	DataDir string
	UID     int64
	GID     int64
	FSGroup *int64
}

// layoutFromStatefulSet reads the data directory and the user etcd runs as from the StatefulSet's pod
// template: the etcd container's --data-dir (or ETCD_DATA_DIR) under the mount of claimTemplate.
func layoutFromStatefulSet(sts *appsv1.StatefulSet, claimTemplate string) (memberLayout, error) {
	spec := sts.Spec.Template.Spec
	c, err := etcdContainer(spec, claimTemplate)
	if err != nil {
		return memberLayout{}, fmt.Errorf("StatefulSet %s/%s: %v", sts.Namespace, sts.Name, err)
	}
	dir, err := containerDataDir(c)
	if err != nil {
		return memberLayout{}, fmt.Errorf("StatefulSet %s/%s container %q: %v; set -data-dir-in-volume", sts.Namespace, sts.Name, c.Name, err)
	}
	rel, err := dataDirInVolume(c, claimTemplate, dir)
	if err != nil {
		return memberLayout{}, fmt.Errorf("StatefulSet %s/%s container %q: %v", sts.Namespace, sts.Name, c.Name, err)
	}
	l := memberLayout{DataDir: rel, UID: nonRootUID, GID: nonRootUID}
	if psc := spec.SecurityContext; psc != nil {
		l.FSGroup = psc.FSGroup
		if psc.RunAsUser != nil {
			l.UID = *psc.RunAsUser
		}
		if psc.RunAsGroup != nil {
			l.GID = *psc.RunAsGroup
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			l.UID = *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			l.GID = *sc.RunAsGroup
		}
	}
	return l, nil
}

// etcdContainer picks the container running etcd: the one named "etcd", else the only one mounting
// the claim template.
func etcdContainer(spec corev1.PodSpec, claimTemplate string) (*corev1.Container, error) {
	var mounting []*corev1.Container
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if c.Name == "etcd" {
			return c, nil
		}
		if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == claimTemplate }) {
			mounting = append(mounting, c)
		}
	}
	switch len(mounting) {
	case 1:
		return mounting[0], nil
	case 0:
		return nil, fmt.Errorf("no container named etcd and none mounts the claim template %q", claimTemplate)
	}
	return nil, fmt.Errorf("no container named etcd and %d containers mount the claim template %q", len(mounting), claimTemplate)
}

// containerDataDir finds etcd's --data-dir in the container's command and args, else ETCD_DATA_DIR,
// expanding $(VAR) references to the container's literal env values as the kubelet does.
func containerDataDir(c *corev1.Container) (string, error) {
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	expand := func(s string) string {
		return envRef.ReplaceAllStringFunc(s, func(ref string) string {
			if v, ok := env[ref[2:len(ref)-1]]; ok {
				return v
			}
			return ref
		})
	}
	words := append(append([]string(nil), c.Command...), c.Args...)
	for i, w := range words {
		for _, flag := range []string{"--data-dir", "-data-dir"} {
			if v, ok := strings.CutPrefix(w, flag+"="); ok {
				return checkDataDir(expand(v))
			}
			if w == flag && i+1 < len(words) {
				return checkDataDir(expand(words[i+1]))
			}
		}
	}
	if v, ok := env["ETCD_DATA_DIR"]; ok {
		return checkDataDir(expand(v))
	}
	return "", fmt.Errorf("neither a --data-dir argument nor ETCD_DATA_DIR")
}

func checkDataDir(d string) (string, error) {
	if !path.IsAbs(d) || strings.Contains(d, "$(") {
		return "", fmt.Errorf("data dir %q is not an absolute path", d)
	}
	return path.Clean(d), nil
}

// dataDirInVolume returns the data dir relative to the root of the claim's volume, honouring subPath.
func dataDirInVolume(c *corev1.Container, claimTemplate, dir string) (string, error) {
	best := ""
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if m.Name != claimTemplate {
			continue
		}
		mp := path.Clean(m.MountPath)
		if (dir == mp || strings.HasPrefix(dir, mp+"/")) && len(mp) > len(best) {
			best, mount = mp, m
		}
	}
	if mount == nil {
		return "", fmt.Errorf("data dir %s is not on the volume of claim template %q", dir, claimTemplate)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(dir, best), "/")
	rel = path.Join(mount.SubPath, rel)
	if rel == "" || rel == "." {
		return "", fmt.Errorf("data dir %s is the root of the volume of claim template %q: restore keeps the old data beside the data dir, so it must be a subdirectory (for example %s/data)", dir, claimTemplate, best)
	}
	return rel, nil
}

// checkRelDataDir validates -data-dir-in-volume.
func checkRelDataDir(rel string) error {
	if rel == "" || path.IsAbs(rel) || path.Clean(rel) != rel || rel == "." || strings.HasPrefix(rel, "../") || rel == ".." {
		return fmt.Errorf("-data-dir-in-volume %q must be a clean relative path below the volume's root, such as data", rel)
	}
	return nil
}
