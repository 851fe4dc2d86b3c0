package rig

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleClassNames reads the class names the workflow uses from manifests/examples, as a user
// applying them would get them.
func TestExampleClassNames(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	r := &Rig{repoRoot: root}
	group, single, err := r.exampleClassNames()
	if err != nil {
		t.Fatal(err)
	}
	for kind, name := range map[string]string{"VolumeGroupSnapshotClass": group, "VolumeSnapshotClass": single} {
		objs, err := readManifests(filepath.Join(root, ExamplesDir, strings.ToLower(kind)+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 1 || objs[0].obj.GetKind() != kind || objs[0].obj.GetName() != name {
			t.Errorf("%s: workflow uses %q, %s/%s.yaml holds %v", kind, name, ExamplesDir, strings.ToLower(kind), objs)
		}
	}

	empty := &Rig{repoRoot: t.TempDir()}
	if _, _, err := empty.exampleClassNames(); err == nil {
		t.Error("exampleClassNames without example manifests: no error")
	}
}

// TestSampleKV checks that sample keys are distinct, sort in write order and stay under their prefix.
func TestSampleKV(t *testing.T) {
	const prefix = "/p/"
	prev := ""
	values := map[string]bool{}
	for i := range 1000 {
		k, v := SampleKV(prefix, i)
		if !strings.HasPrefix(k, prefix) || k <= prev {
			t.Fatalf("key %d = %q after %q", i, k, prev)
		}
		if values[v] {
			t.Fatalf("value %q repeated", v)
		}
		values[v] = true
		prev = k
	}
	ka, _ := SampleKV("/a/", 1)
	kb, _ := SampleKV("/b/", 1)
	if ka == kb {
		t.Error("keys of different prefixes collide")
	}
}
