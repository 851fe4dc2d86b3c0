package rig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// buildRecipe is part of the upstream cache key; bump it when the way the binaries are built changes
// (flags, ldflags, the list below) so that existing caches are rebuilt.
const buildRecipe = "rig-upstream-2"

// DriverBinary is the file name of this driver's binary in the directory EnsureDriver returns.
const DriverBinary = "etcd-snapshot-driver"

// upstreamBinary is one command built from the nested module tools/upstream.
type upstreamBinary struct {
	name    string
	pkg     string
	ldflags func(v upstreamVersions) string
}

// upstreamVersions are the pinned versions read from tools/upstream/go.mod.
type upstreamVersions struct {
	Kubernetes, Snapshotter, Etcd string
}

func kubeLDFlags(v upstreamVersions) string {
	major, minor := "", ""
	if parts := strings.SplitN(strings.TrimPrefix(v.Kubernetes, "v"), ".", 3); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	var b strings.Builder
	for _, p := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		fmt.Fprintf(&b, " -X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean",
			p, v.Kubernetes, p, major, p, minor, p)
	}
	return b.String()
}

func snapshotterLDFlags(v upstreamVersions) string { return " -X main.version=" + v.Snapshotter }

func noLDFlags(upstreamVersions) string { return "" }

// upstreamBinaries are the commands the rig runs, in build order (small ones first, so a broken
// toolchain shows up quickly).
var upstreamBinaries = []upstreamBinary{
	{"etcd", "./etcd", noLDFlags},
	{"etcdctl", "go.etcd.io/etcd/etcdctl/v3", noLDFlags},
	{"etcdutl", "go.etcd.io/etcd/etcdutl/v3", noLDFlags},
	{"snapshot-controller", "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller", snapshotterLDFlags},
	{"csi-snapshotter", "github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter", snapshotterLDFlags},
	{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", kubeLDFlags},
	{"kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager", kubeLDFlags},
	{"kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler", kubeLDFlags},
	{"kubectl", "k8s.io/kubernetes/cmd/kubectl", kubeLDFlags},
	{"promtool", "github.com/prometheus/prometheus/cmd/promtool", noLDFlags},
	{"versitygw", "github.com/versity/versitygw/cmd/versitygw", noLDFlags},
}

// cacheDir is <repo>/.cache/rig, git-ignored.
func cacheDir(root string) string { return filepath.Join(root, ".cache", "rig") }

// EnsureUpstream returns the directory holding the pinned upstream binaries (kube-apiserver,
// kube-controller-manager, kube-scheduler, kubectl, snapshot-controller, csi-snapshotter, etcd,
// etcdctl, etcdutl, promtool), building them from tools/upstream first when the cache for the current pins is
// missing. The cache key hashes tools/upstream's go.mod, go.sum and Go files. Builds go to a temporary
// directory renamed into place at the end, so an interrupted build never leaves a half cache, and a
// lock file makes concurrent callers (parallel test binaries) wait for one build. Progress lines go
// to progress.
func EnsureUpstream(ctx context.Context, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	src := filepath.Join(root, "tools", "upstream")
	hash, err := upstreamHash(src)
	if err != nil {
		return "", err
	}
	final := filepath.Join(cacheDir(root), "upstream-"+hash)
	binDir := filepath.Join(final, "bin")
	if upstreamComplete(binDir) {
		return binDir, nil
	}
	if err := os.MkdirAll(cacheDir(root), 0o755); err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir(root), "upstream-"+hash+".lock"), progress, "the upstream binaries")
	if err != nil {
		return "", err
	}
	defer unlock()
	if upstreamComplete(binDir) {
		return binDir, nil
	}
	// Under the lock nobody else writes this temporary directory; a leftover is an interrupted build.
	tmp := filepath.Join(cacheDir(root), ".upstream-"+hash+".tmp")
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("rig: remove interrupted build %s: %w", tmp, err)
	}
	if err := os.RemoveAll(final); err != nil {
		return "", fmt.Errorf("rig: remove incomplete cache %s: %w", final, err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "bin"), 0o755); err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	versions, err := readUpstreamVersions(filepath.Join(src, "go.mod"))
	if err != nil {
		return "", err
	}
	rel, _ := filepath.Rel(root, final)
	fmt.Fprintf(progress, "rig: building upstream binaries (Kubernetes %s, external-snapshotter %s, etcd %s) into %s;"+
		" a cold build takes about 8 minutes on 2 cores, later runs reuse it\n",
		versions.Kubernetes, versions.Snapshotter, versions.Etcd, rel)
	start := time.Now()
	for i, b := range upstreamBinaries {
		label := fmt.Sprintf("[%d/%d] %s", i+1, len(upstreamBinaries), b.name)
		ldflags := "-s -w" + b.ldflags(versions)
		if err := goBuild(ctx, progress, label, src, filepath.Join(tmp, "bin", b.name), ldflags, b.pkg); err != nil {
			os.RemoveAll(tmp)
			return "", err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("rig: move upstream build into place: %w", err)
	}
	fmt.Fprintf(progress, "rig: upstream binaries ready in %s (%s)\n", rel, time.Since(start).Round(time.Second))
	return binDir, nil
}

// EnsureDriver builds this driver from the checkout with tools/build (the recipe Bazel's
// //:etcd-snapshot-driver follows too: CGO disabled, -trimpath, version stamped into main.version),
// stamping `git describe`, else "dev", and returns the directory holding it as DriverBinary. The Go
// build cache makes an unchanged checkout cost only a link.
func EnsureDriver(ctx context.Context, progress io.Writer) (string, error) {
	return ensureBuilt(ctx, progress, "driver", DriverBinary, "the driver", func(root, out string, progress io.Writer) error {
		version := gitDescribe(root)
		cmd := exec.CommandContext(ctx, filepath.Join(root, "tools", "build"), "-o", out)
		cmd.Env = append(os.Environ(), "VERSION="+version)
		return runBuild(ctx, progress, DriverBinary+" "+version, "tools/build", root, cmd)
	})
}

// ensureBuilt builds binary into <repo>/.cache/rig/<subdir>/bin under that directory's lock (what
// names the build while another process holds it) and returns that bin directory. build writes the
// file out, which is then renamed over the old binary: running copies stay untouched.
func ensureBuilt(ctx context.Context, progress io.Writer, subdir, binary, what string, build func(root, out string, progress io.Writer) error) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cacheDir(root), subdir)
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, "build.lock"), progress, what)
	if err != nil {
		return "", err
	}
	defer unlock()
	tmp := filepath.Join(dir, fmt.Sprintf(".%s.%d.tmp", binary, os.Getpid()))
	defer os.Remove(tmp)
	if err := build(root, tmp, progress); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(binDir, binary)); err != nil {
		return "", fmt.Errorf("rig: move %s binary into place: %w", subdir, err)
	}
	return binDir, nil
}

// goBuild runs `go build` for one main package with the rig's flags (see runBuild).
func goBuild(ctx context.Context, progress io.Writer, label, dir, out, ldflags, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, pkg)
	// GOFLAGS is cleared so a user's -mod=vendor or similar cannot break the nested module.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	return runBuild(ctx, progress, label, "go build "+pkg, dir, cmd)
}

// runBuild runs the build cmd (named desc in errors) in dir, printing a start line, a heartbeat
// every 30s and the elapsed time, and the end of its output if it fails.
func runBuild(ctx context.Context, progress io.Writer, label, desc, dir string, cmd *exec.Cmd) error {
	start := time.Now()
	fmt.Fprintf(progress, "rig: building %s ...\n", label)
	cmd.Dir = dir
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	stop := Heartbeat(30*time.Second, func() {
		fmt.Fprintf(progress, "rig:   still building %s (%s)\n", label, time.Since(start).Round(time.Second))
	})
	err := cmd.Run()
	stop()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("rig: build of %s interrupted: %w", label, ctx.Err())
		}
		return fmt.Errorf("rig: %s (in %s) failed: %v\n%s", desc, dir, err, tail(output.Bytes(), 40))
	}
	fmt.Fprintf(progress, "rig: built %s in %s\n", label, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// upstreamHash is the short cache key of tools/upstream: go.mod, go.sum and every .go file, plus the
// build recipe and target platform.
func upstreamHash(src string) (string, error) {
	var files []string
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(src, path)
		if rel == "go.mod" || rel == "go.sum" || strings.HasSuffix(rel, ".go") {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("rig: hash %s: %w", src, err)
	}
	if !slices.Contains(files, "go.mod") {
		return "", fmt.Errorf("rig: %s has no go.mod", src)
	}
	sort.Strings(files)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s/%s\x00", buildRecipe, runtime.GOOS, runtime.GOARCH)
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			return "", fmt.Errorf("rig: hash %s: %w", src, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.ToSlash(rel), len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

func upstreamComplete(binDir string) bool {
	for _, b := range upstreamBinaries {
		st, err := os.Stat(filepath.Join(binDir, b.name))
		if err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

var requireLine = regexp.MustCompile(`(?m)^\s*(?:require\s+)?(\S+)\s+(v\S+)`)

// readUpstreamVersions reads the pinned versions from tools/upstream/go.mod.
func readUpstreamVersions(gomod string) (upstreamVersions, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return upstreamVersions{}, fmt.Errorf("rig: %w", err)
	}
	var v upstreamVersions
	for _, m := range requireLine.FindAllStringSubmatch(string(data), -1) {
		switch m[1] {
		case "k8s.io/kubernetes":
			v.Kubernetes = m[2]
		case "github.com/kubernetes-csi/external-snapshotter/v8":
			v.Snapshotter = m[2]
		case "go.etcd.io/etcd/server/v3":
			v.Etcd = m[2]
		}
	}
	if v.Kubernetes == "" || v.Snapshotter == "" || v.Etcd == "" {
		return v, fmt.Errorf("rig: %s does not require k8s.io/kubernetes, external-snapshotter/v8 and etcd server/v3", gomod)
	}
	return v, nil
}

// gitDescribe is the driver version stamped into rig builds: `git describe`, else "dev".
func gitDescribe(root string) string {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
}

// lockFile takes an exclusive flock on path, waiting (and saying so) while another process holds it.
// The kernel drops the lock if the holder dies, so a killed build never blocks later ones.
func lockFile(ctx context.Context, path string, progress io.Writer, what string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("rig: lock %s: %w", path, err)
	}
	try := func() (bool, error) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return true, nil
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("rig: lock %s: %w", path, err)
	}
	unlock := func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for waiting := false; ; waiting = true {
		ok, err := try()
		if err != nil {
			f.Close()
			return nil, err
		}
		if ok {
			return unlock, nil
		}
		if !waiting {
			fmt.Fprintf(progress, "rig: waiting for another process building %s (lock %s)\n", what, path)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("rig: waiting for lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}

// tail returns at most the last n lines of b.
func tail(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Heartbeat calls beat every period until the returned stop is called (the progress line of a long
// step: a build, a fill). Call stop exactly once; it does not wait for a beat under way.
func Heartbeat(period time.Duration, beat func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				beat()
			}
		}
	}()
	return func() { close(done) }
}
