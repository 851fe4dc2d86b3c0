package podrunner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Modes of the files the runner writes: secrets only for the owner, as the brief of the rig asks
// (the kubelet's default would be 0644), config maps and downward API files readable by all.
const (
	secretFileMode = 0o600
	configFileMode = 0o644
)

// prepareVolumes makes every volume of the pod available on the host and returns the host directory of
// each, by volume name. Secret, ConfigMap and downward API contents are written afresh under
// <podDir>/volumes/<name>. A projected service account token is not issued: the volume's directory
// exists but holds no token, only the projected ConfigMaps, Secrets and downward API files.
func (r *runner) prepareVolumes(ctx context.Context, pod *v1.Pod, podDir string) (map[string]string, error) {
	out := make(map[string]string, len(pod.Spec.Volumes))
	for _, vol := range pod.Spec.Volumes {
		dir, err := r.prepareVolume(ctx, pod, podDir, vol)
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", vol.Name, err)
		}
		out[vol.Name] = dir
	}
	return out, nil
}

func (r *runner) prepareVolume(ctx context.Context, pod *v1.Pod, podDir string, vol v1.Volume) (string, error) {
	local := filepath.Join(podDir, "volumes", vol.Name)
	switch {
	case vol.PersistentVolumeClaim != nil:
		return r.claimDir(ctx, pod.Namespace, vol.PersistentVolumeClaim.ClaimName)
	case vol.HostPath != nil:
		p := vol.HostPath.Path
		if t := vol.HostPath.Type; t != nil && *t == v1.HostPathDirectoryOrCreate {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return "", err
			}
		}
		return p, nil
	case vol.EmptyDir != nil:
		return local, os.MkdirAll(local, 0o777)
	}

	// Content volumes are rewritten on every start so that they show the current object.
	if err := os.RemoveAll(local); err != nil {
		return "", err
	}
	if err := os.MkdirAll(local, 0o755); err != nil {
		return "", err
	}
	switch {
	case vol.Secret != nil:
		s := vol.Secret
		return local, r.writeSecret(ctx, local, pod.Namespace, s.SecretName, s.Items, s.Optional)
	case vol.ConfigMap != nil:
		c := vol.ConfigMap
		return local, r.writeConfigMap(ctx, local, pod.Namespace, c.Name, c.Items, c.Optional)
	case vol.DownwardAPI != nil:
		return local, writeDownwardAPI(local, pod, vol.DownwardAPI.Items)
	case vol.Projected != nil:
		// Projected volumes are in practice the service account volume the API server adds to every pod
		// (kube-api-access-*). The runner issues no token, so the volume is best effort: what can be
		// written is, and a missing source (kube-root-ca.crt not yet published) does not hold the pod.
		for _, src := range vol.Projected.Sources {
			var err error
			switch {
			case src.Secret != nil:
				err = r.writeSecret(ctx, local, pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional)
			case src.ConfigMap != nil:
				err = r.writeConfigMap(ctx, local, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional)
			case src.DownwardAPI != nil:
				err = writeDownwardAPI(local, pod, src.DownwardAPI.Items)
			}
			if err != nil {
				r.logf("pod %s/%s: projected volume %q: %v (ignored)", pod.Namespace, pod.Name, vol.Name, err)
			}
		}
		return local, nil
	}
	r.logf("pod %s/%s: volume %q has a type the pod runner does not populate; it is an empty directory", pod.Namespace, pod.Name, vol.Name)
	return local, nil
}

// claimDir follows a claim to its bound PersistentVolume and returns the volume's host directory: the
// CSI volume handle (the rig's storage keeps volumes as directories), or a hostPath/local path.
func (r *runner) claimDir(ctx context.Context, ns, name string) (string, error) {
	pvc, err := r.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("claim %s/%s: %w", ns, name, err)
	}
	if pvc.Status.Phase != v1.ClaimBound || pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("claim %s/%s is not bound (phase %q)", ns, name, pvc.Status.Phase)
	}
	pv, err := r.kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("volume %s of claim %s/%s: %w", pvc.Spec.VolumeName, ns, name, err)
	}
	var dir string
	switch src := pv.Spec.PersistentVolumeSource; {
	case src.CSI != nil:
		dir = src.CSI.VolumeHandle
	case src.HostPath != nil:
		dir = src.HostPath.Path
	case src.Local != nil:
		dir = src.Local.Path
	default:
		return "", fmt.Errorf("volume %s has no CSI volume handle, hostPath or local path", pv.Name)
	}
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("volume %s: handle %q is not an absolute host directory", pv.Name, dir)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("volume %s: host directory %s is missing", pv.Name, dir)
	}
	return dir, nil
}

func (r *runner) writeSecret(ctx context.Context, dir, ns, name string, items []v1.KeyToPath, optional *bool) error {
	s, err := r.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("secret %s/%s: %w", ns, name, err)
	}
	return writeKeys(dir, s.Data, items, optional, secretFileMode, "secret "+name)
}

func (r *runner) writeConfigMap(ctx context.Context, dir, ns, name string, items []v1.KeyToPath, optional *bool) error {
	cm, err := r.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("configmap %s/%s: %w", ns, name, err)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return writeKeys(dir, data, items, optional, configFileMode, "configmap "+name)
}

// writeKeys writes each key as a file named after it, or only the listed items at their paths.
func writeKeys(dir string, data map[string][]byte, items []v1.KeyToPath, optional *bool, mode os.FileMode, what string) error {
	if len(items) == 0 {
		for k, v := range data {
			if err := writeFile(dir, k, v, mode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		if err := writeFile(dir, it.Path, v, mode); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes rel under dir, refusing paths that would leave dir.
func writeFile(dir, rel string, data []byte, mode os.FileMode) error {
	clean := filepath.Clean(rel)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Errorf("file path %q leaves the volume", rel)
	}
	p := filepath.Join(dir, clean)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, mode)
}

func writeDownwardAPI(dir string, pod *v1.Pod, items []v1.DownwardAPIVolumeFile) error {
	for _, it := range items {
		if it.FieldRef == nil {
			continue // resource fields are not offered as files by the runner
		}
		v, err := fieldValue(pod, it.FieldRef.FieldPath)
		if err != nil {
			return err
		}
		if err := writeFile(dir, it.Path, []byte(v), configFileMode); err != nil {
			return err
		}
	}
	return nil
}

// containerMounts lists where each of the container's mounts and its termination message file live on
// the host.
func containerMounts(c *v1.Container, volumes map[string]string, terminationFile string) ([]mountMap, error) {
	var ms []mountMap
	for _, m := range c.VolumeMounts {
		host, ok := volumes[m.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %q refers to no volume of the pod", m.Name)
		}
		if m.SubPath != "" {
			host = filepath.Join(host, m.SubPath)
			if err := os.MkdirAll(host, 0o755); err != nil {
				return nil, err
			}
		}
		ms = append(ms, mountMap{Container: m.MountPath, Host: host})
	}
	ms = append(ms, mountMap{Container: terminationMessagePath(c), Host: terminationFile})
	return ms, nil
}

func terminationMessagePath(c *v1.Container) string {
	if c.TerminationMessagePath != "" {
		return c.TerminationMessagePath
	}
	return v1.TerminationMessagePathDefault
}
