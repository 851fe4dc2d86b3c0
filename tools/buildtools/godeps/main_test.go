package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
)

func TestRepoName(t *testing.T) {
	// Names as go_deps creates them (and as gazelle's resolver writes them into BUILD files).
	cases := []struct{ path, want string }{
		{"google.golang.org/grpc", "org_golang_google_grpc"},
		{"github.com/kubernetes-csi/external-snapshotter/client/v8", "com_github_kubernetes_csi_external_snapshotter_client_v8"},
		{"sigs.k8s.io/sig-storage-lib-external-provisioner/v13", "io_k8s_sigs_sig_storage_lib_external_provisioner_v13"},
		{"go.etcd.io/etcd/client/v3", "io_etcd_go_etcd_client_v3"},
		{"gopkg.in/yaml.v2", "in_gopkg_yaml_v2"},
		{"github.com/BurntSushi/toml", "com_github_burntsushi_toml"},
		{"go.yaml.in/yaml/v3", "in_yaml_go_yaml_v3"},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			if got := repoName(tc.path); got != tc.want {
				t.Errorf("repoName(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestDirectRepos(t *testing.T) {
	mf, err := modfile.Parse("go.mod", []byte(`module example.com/m

go 1.26.0

require (
	google.golang.org/grpc v1.85.0
	go.uber.org/zap v1.27.1 // indirect
	golang.org/x/tools v0.51.0 // indirect
)

tool golang.org/x/tools/cmd/stringer
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := directRepos(mf)
	want := []string{"org_golang_google_grpc", "org_golang_x_tools"}
	if !slices.Equal(got, want) {
		t.Errorf("directRepos = %q, want %q (indirect zap left out, the tool's module kept)", got, want)
	}
}

// TestCheckFix runs the command as check-build-files does: a stale use_repo fails, -fix rewrites
// it keeping the other calls, and a BUILD file naming an unimported repository fails.
func TestCheckFix(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goMod := write("go.mod", "module example.com/m\n\ngo 1.26.0\n\nrequire (\n\tgoogle.golang.org/grpc v1.85.0\n\tk8s.io/api v0.37.2\n\tgo.uber.org/zap v1.27.1 // indirect\n)\n")
	module := write("MODULE.bazel", `bazel_dep(name = "rules_go", version = "0.64.2")

go_deps = use_extension("@gazelle//:extensions.bzl", "go_deps")
go_deps.from_file(go_mod = "//:go.mod")
use_repo(
    go_deps,
    # kept with its comment
    "io_k8s_api",
    "com_github_removed",
)
`)
	build := write("BUILD.bazel", `load("@rules_go//go:def.bzl", "go_library")

go_library(
    name = "m",
    deps = [
        "@io_k8s_api//core/v1:core",
        "@org_uber_go_zap//:zap",
    ],
)
`)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "GODEPS_TEST_MAIN=1")
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}

	out, code := run("check", "-go-mod", goMod, "-module", module)
	if code != 1 || !strings.Contains(out, `-    "com_github_removed",`) || !strings.Contains(out, `+    "org_golang_google_grpc",`) {
		t.Fatalf("stale use_repo: exit %d, output:\n%s", code, out)
	}
	if out, code := run("check", "-fix", "-go-mod", goMod, "-module", module); code != 0 {
		t.Fatalf("-fix: exit %d, output:\n%s", code, out)
	}
	data, _ := os.ReadFile(module)
	wantModule := `use_repo(
    go_deps,
    # kept with its comment
    "io_k8s_api",
    "org_golang_google_grpc",
)`
	if !strings.Contains(string(data), wantModule) || !strings.Contains(string(data), `bazel_dep(name = "rules_go"`) {
		t.Fatalf("MODULE.bazel after -fix:\n%s", data)
	}
	out, code = run("check", "-go-mod", goMod, "-module", module, build)
	if code != 1 || !strings.Contains(out, "BUILD.bazel:7: @org_uber_go_zap is not visible") || strings.Contains(out, "@io_k8s_api is not") || strings.Contains(out, "@rules_go is not") {
		t.Fatalf("labels: exit %d, output:\n%s", code, out)
	}
}

func TestMain(m *testing.M) {
	if os.Getenv("GODEPS_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
