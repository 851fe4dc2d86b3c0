package rig

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// fieldManager is the server-side apply field manager of everything the rig applies.
const fieldManager = "rig"

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// manifest is one object read from a YAML file.
type manifest struct {
	obj    *unstructured.Unstructured
	source string // file name, for error messages
}

// readManifests decodes every object in the given YAML files (multi-document files included).
func readManifests(files ...string) ([]manifest, error) {
	var objs []manifest
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("rig: %w", err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for i := 0; ; i++ {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("rig: %s document %d: %w", file, i+1, err)
			}
			if len(m) == 0 {
				continue
			}
			u := &unstructured.Unstructured{Object: m}
			if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
				return nil, fmt.Errorf("rig: %s document %d has no apiVersion, kind or metadata.name", file, i+1)
			}
			objs = append(objs, manifest{obj: u, source: filepath.Base(file)})
		}
	}
	return objs, nil
}

// applyOrder puts objects that others depend on first, as kubectl users arrange their files.
func applyOrder(kind string) int {
	switch kind {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	case "ServiceAccount":
		return 2
	case "ClusterRole", "Role":
		return 3
	case "ClusterRoleBinding", "RoleBinding":
		return 4
	default:
		return 5
	}
}

// apply server-side-applies objs; namespaced objects without a namespace go to defaultNamespace.
func (r *Rig) apply(ctx context.Context, objs []manifest, defaultNamespace string) error {
	sort.SliceStable(objs, func(i, j int) bool { return applyOrder(objs[i].obj.GetKind()) < applyOrder(objs[j].obj.GetKind()) })
	for _, m := range objs {
		obj := m.obj
		gvk := obj.GroupVersionKind()
		mapping, err := r.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			// A kind served by a CRD applied moments ago: rediscover once.
			r.mapper.Reset()
			mapping, err = r.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		}
		if err != nil {
			return fmt.Errorf("rig: apply %s %s (%s): %w", gvk.Kind, obj.GetName(), m.source, err)
		}
		res := r.Dynamic.Resource(mapping.Resource)
		var err2 error
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(defaultNamespace)
			}
			_, err2 = res.Namespace(obj.GetNamespace()).Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
		} else {
			_, err2 = res.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
		}
		if err2 != nil {
			return fmt.Errorf("rig: apply %s %s/%s (%s): %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), m.source, err2)
		}
	}
	return nil
}

// snapshotCRDFiles returns the CRD files shipped with github.com/kubernetes-csi/external-snapshotter/client/v8
// at the version the main module requires.
func snapshotCRDFiles(ctx context.Context, repoRoot string) ([]string, error) {
	const mod = "github.com/kubernetes-csi/external-snapshotter/client/v8"
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", mod)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); jerr != nil || info.Dir == "" {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return nil, fmt.Errorf("rig: locate module %s: %v %s %s", mod, err, info.Error, stderr)
	}
	files, err := filepath.Glob(filepath.Join(info.Dir, "config", "crd", "*.yaml"))
	if err != nil {
		return nil, err
	}
	var crds []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			crds = append(crds, f)
		}
	}
	for _, want := range []string{
		"snapshot.storage.k8s.io_volumesnapshots.yaml",
		"snapshot.storage.k8s.io_volumesnapshotcontents.yaml",
		"snapshot.storage.k8s.io_volumesnapshotclasses.yaml",
		"groupsnapshot.storage.k8s.io_volumegroupsnapshots.yaml",
		"groupsnapshot.storage.k8s.io_volumegroupsnapshotcontents.yaml",
		"groupsnapshot.storage.k8s.io_volumegroupsnapshotclasses.yaml",
	} {
		if !slices.Contains(baseNames(crds), want) {
			return nil, fmt.Errorf("rig: %s/config/crd has no %s", info.Dir, want)
		}
	}
	return crds, nil
}

func baseNames(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, filepath.Base(p))
	}
	return out
}

// waitEstablished waits until every named CRD reports the Established condition.
func (r *Rig) waitEstablished(ctx context.Context, names []string) error {
	var pending []string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pending = pending[:0]
		for _, name := range names {
			crd, err := r.Dynamic.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
			if err != nil || !crdEstablished(crd) {
				pending = append(pending, name)
			}
		}
		return len(pending) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("rig: CRDs not established: %s: %w", strings.Join(pending, ", "), err)
	}
	return nil
}

func crdEstablished(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// ApplyManifests server-side-applies every object in the given YAML files (paths relative to the
// repository root unless absolute), for example manifests/examples/volumegroupsnapshotclass.yaml.
// Namespaced objects without a namespace go to defaultNamespace.
func (r *Rig) ApplyManifests(ctx context.Context, defaultNamespace string, files ...string) error {
	var paths []string
	for _, f := range files {
		if !filepath.IsAbs(f) {
			f = filepath.Join(r.repoRoot, f)
		}
		paths = append(paths, f)
	}
	objs, err := readManifests(paths...)
	if err != nil {
		return err
	}
	return r.apply(ctx, objs, defaultNamespace)
}
