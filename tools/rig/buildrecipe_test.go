package rig

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBuildRecipe checks that the two recipes of the driver binary agree: tools/build, which the rig
// runs (EnsureDriver), and the root BUILD.bazel's go_binary. Both must build pure Go (a static binary,
// which the distroless image and the snapshot Job's verify container need) and stamp main.version.
func TestBuildRecipe(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	read := func(rel string) string {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	script := read("tools/build")
	goBuild := regexp.MustCompile(`(?m)^.*\bgo build\b.*$`).FindString(script)
	if goBuild == "" {
		t.Fatal("tools/build has no `go build` line; the rig runs tools/build to build the driver")
	}
	if !regexp.MustCompile(`\bCGO_ENABLED=0\b`).MatchString(script) {
		t.Error("tools/build drifted: it no longer sets CGO_ENABLED=0, while BUILD.bazel's go_binary builds pure = \"on\"")
	}
	if !strings.Contains(goBuild, `-X main.version=`) {
		t.Errorf("tools/build drifted: its go build line %q does not stamp -X main.version=, which BUILD.bazel's go_binary stamps through x_defs", goBuild)
	}

	binary := regexp.MustCompile(`(?ms)^go_binary\(\n(.*?)^\)`).FindAllStringSubmatch(read("BUILD.bazel"), -1)
	var stanza string
	for _, m := range binary {
		if strings.Contains(m[1], `name = "etcd-snapshot-driver",`) {
			stanza = m[1]
		}
	}
	if stanza == "" {
		t.Fatal(`BUILD.bazel drifted: no go_binary(name = "etcd-snapshot-driver") in the root BUILD.bazel`)
	}
	if !regexp.MustCompile(`(?m)^\s*pure = "on",$`).MatchString(stanza) {
		t.Errorf("BUILD.bazel drifted: go_binary etcd-snapshot-driver does not say pure = \"on\", while tools/build builds with CGO_ENABLED=0:\n%s", stanza)
	}
	if !regexp.MustCompile(`(?m)^\s*x_defs = \{[^}]*"main\.version": "\{STABLE_VERSION\}"`).MatchString(stanza) {
		t.Errorf("BUILD.bazel drifted: go_binary etcd-snapshot-driver does not stamp x_defs {\"main.version\": \"{STABLE_VERSION}\"}, while tools/build stamps -X main.version= (and prints STABLE_VERSION for --workspace-status):\n%s", stanza)
	}
}
