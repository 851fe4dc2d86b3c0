package driver

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// resolveLayout decides the data dir and the user: flags win, then the StatefulSet's pod template.
func (p *restorePlan) resolveLayout(ctx context.Context, cfg RestoreConfig) error {
	if p.StatefulSet != nil {
		template := cfg.ClaimTemplate
		if template == "" && len(p.Members) > 0 {
			template = strings.TrimSuffix(p.Members[0].PVC, "-"+p.Members[0].Name)
		}
		l, err := layoutFromStatefulSet(p.StatefulSet, template)
		if err != nil && cfg.DataDirInVolume == "" {
			return err
		}
		if err == nil {
			p.Layout = l
		}
	} else {
		p.Layout = memberLayout{UID: nonRootUID, GID: nonRootUID}
		if cfg.DataDirInVolume == "" {
			where := "the snapshot's members are not pods of a StatefulSet in namespace " + p.Namespace
			if !p.InPlace {
				where = fmt.Sprintf("StatefulSet %s/%s does not exist yet", p.Namespace, p.NewCluster)
			}
			return fmt.Errorf("%s, so the data dir inside the PVCs is unknown; set -data-dir-in-volume (and -uid, -gid)", where)
		}
	}
	if cfg.DataDirInVolume != "" {
		p.Layout.DataDir = cfg.DataDirInVolume
	}
	if cfg.UID != nil {
		p.Layout.UID = *cfg.UID
	}
	if cfg.GID != nil {
		p.Layout.GID = *cfg.GID
	}
	return nil
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
