package rig

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

func TestUpstreamHash(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module x\n\nrequire k8s.io/kubernetes v1.37.2\n")
	write("go.sum", "sum\n")
	write("etcd/main.go", "package main\n")
	base, err := upstreamHash(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := upstreamHash(dir); again != base || len(base) != 12 {
		t.Fatalf("hash %q then %q; want a stable 12-hex key", base, again)
	}
	write("README.md", "not part of the build")
	if h, _ := upstreamHash(dir); h != base {
		t.Errorf("a non-Go file changed the hash")
	}
	cases := []struct{ name, rel, content string }{
		{"pin bump", "go.mod", "module x\n\nrequire k8s.io/kubernetes v1.37.3\n"},
		{"checksum", "go.sum", "other\n"},
		{"source", "etcd/main.go", "package main // changed\n"},
		{"new file", "tools.go", "package upstream\n"},
	}
	prev := base
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			write(tc.rel, tc.content)
			h, err := upstreamHash(dir)
			if err != nil {
				t.Fatal(err)
			}
			if h == prev {
				t.Errorf("changing %s kept hash %s", tc.rel, h)
			}
			prev = h
		})
	}
	if _, err := upstreamHash(t.TempDir()); err == nil {
		t.Error("no error for a directory without go.mod")
	}
}

func TestReadUpstreamVersions(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	v, err := readUpstreamVersions(filepath.Join(root, "tools", "upstream", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{"kubernetes": v.Kubernetes, "external-snapshotter": v.Snapshotter, "etcd": v.Etcd} {
		if !strings.HasPrefix(got, "v") {
			t.Errorf("%s version %q", name, got)
		}
	}
	if !strings.HasPrefix(v.Kubernetes, "v1.") || !strings.HasPrefix(v.Snapshotter, "v8.") || !strings.HasPrefix(v.Etcd, "v3.") {
		t.Errorf("versions %+v", v)
	}
	if flags := kubeLDFlags(v); !strings.Contains(flags, "k8s.io/component-base/version.gitVersion="+v.Kubernetes) {
		t.Errorf("kube ldflags %q do not stamp the version", flags)
	}
}

func TestWithoutFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		drop []string
		want []string
	}{
		{"equals form", []string{"-endpoint=unix:///csi/csi.sock", "-v=2", "-metadata-namespace=kube-system"}, []string{"endpoint", "v"}, []string{"-metadata-namespace=kube-system"}},
		{"double dash", []string{"--csi-address=/csi/csi.sock", "--leader-election=false", "--feature-gates=CSIVolumeGroupSnapshot=true"}, []string{"csi-address", "leader-election"}, []string{"--feature-gates=CSIVolumeGroupSnapshot=true"}},
		{"separate value", []string{"-kubeconfig", "/x", "-v=2"}, []string{"kubeconfig"}, []string{"-v=2"}},
		{"boolean before flag", []string{"-leader-election", "-v=2"}, []string{"leader-election"}, []string{"-v=2"}},
		{"nothing to drop", []string{"-a=1"}, []string{"b"}, []string{"-a=1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := withoutFlags(tc.args, tc.drop...); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("withoutFlags(%q, %q) = %q, want %q", tc.args, tc.drop, got, tc.want)
			}
		})
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if modulePathOf(filepath.Join(root, "go.mod")) != ModulePath {
		t.Fatalf("RepoRoot %s has no go.mod of %s", root, ModulePath)
	}
	wd, _ := os.Getwd()
	if !strings.HasPrefix(wd, root) {
		t.Errorf("RepoRoot %s is not above the working directory %s", root, wd)
	}
}

// TestProcessStopReachesGroup checks that stopping a component also ends what it started, and that
// a component ignoring SIGTERM is killed after the grace period.
func TestProcessStopReachesGroup(t *testing.T) {
	dir := t.TempDir()
	p := &process{name: "sh", path: "/bin/sh", logPath: filepath.Join(dir, "sh.log"),
		args: []string{"-c", `trap "" TERM; sleep 300 & sleep 300 & echo started; wait`}}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return p.logSinceStartContains("started") && len(Descendants(p.pid())) == 2 })
	begin := time.Now()
	p.stop(500 * time.Millisecond)
	if alive, _ := p.running(); alive {
		t.Fatal("still running after stop")
	}
	if took := time.Since(begin); took < 400*time.Millisecond {
		t.Errorf("stopped in %s although it ignores SIGTERM; expected the grace period first", took)
	}
	waitFor(t, func() bool { return len(Descendants(os.Getpid())) == 0 })
	p.stop(time.Second) // idempotent
}

// TestProcessRestart checks the supervision the csi-snapshotter gets: restarted after exiting on its
// own, not after stop.
func TestProcessRestart(t *testing.T) {
	dir := t.TempDir()
	p := &process{name: "sh", path: "/bin/sh", logPath: filepath.Join(dir, "sh.log"), restart: true,
		args: []string{"-c", "echo run; sleep 0.2; exit 3"}}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.starts >= 2
	})
	p.stop(time.Second)
	p.mu.Lock()
	starts := p.starts
	p.mu.Unlock()
	time.Sleep(restartDelay + 500*time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.starts != starts {
		t.Errorf("restarted after stop (%d starts, then %d)", starts, p.starts)
	}
	log, _ := os.ReadFile(p.logPath)
	if !strings.Contains(string(log), "exit status 3") {
		t.Errorf("log does not record the exit:\n%s", log)
	}
}

// waitFor fails t unless cond holds within 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("condition not met within 10s: %v", err)
	}
}

func TestEtcdStatefulSetExtraArgs(t *testing.T) {
	s := &EtcdStatefulSet{r: &Rig{LauncherImage: LauncherImage}, name: "main", namespace: "ns", members: 1, storageClass: StorageClass,
		etcdArgs: []string{"--quota-backend-bytes=17179869184", "--snapshot-count=1000"}}
	args := s.statefulSet().Spec.Template.Spec.Containers[0].Args
	if n := len(args); n < 3 || args[n-2] != "--quota-backend-bytes=17179869184" || args[n-1] != "--snapshot-count=1000" {
		t.Errorf("etcd container args %q; want the extra flags last", args)
	}
	if !slices.Contains(args, "--data-dir="+EtcdDataDir) {
		t.Errorf("etcd container args %q lost --data-dir", args)
	}
	plain := (&EtcdStatefulSet{r: s.r, name: "main", namespace: "ns", members: 1}).statefulSet().Spec.Template.Spec.Containers[0].Args
	for _, a := range plain {
		if strings.HasPrefix(a, "--quota-backend-bytes") {
			t.Errorf("default args carry %s", a)
		}
	}
	if _, err := Start(context.Background(), Options{EtcdArgs: []string{"--quota-backend-bytes=1"}, NoSignalHandler: true}); err == nil ||
		!strings.Contains(err.Error(), "EtcdArgs needs Options.EtcdStatefulSet") {
		t.Errorf("Start with EtcdArgs but process-managed members: %v", err)
	}
}

// lockedBuffer is a progress writer read while lockFile writes to it from another goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLockFileWaits takes a build lock held by someone else: the second taker says once that it waits,
// gets the lock when the first lets go, and gives up when its context ends.
func TestLockFileWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build.lock")
	ctx := context.Background()
	unlock, err := lockFile(ctx, path, nil, "the test")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	if _, err := lockFile(short, path, &lockedBuffer{}, "the test"); err == nil {
		t.Fatal("took a lock held by another taker")
	}
	var progress lockedBuffer
	got := make(chan error, 1)
	go func() {
		unlock2, err := lockFile(ctx, path, &progress, "the test")
		if err == nil {
			unlock2()
		}
		got <- err
	}()
	time.Sleep(1200 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("lockFile returned %v while the lock was held", err)
	default:
	}
	unlock()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(progress.String(), "waiting for another process building the test"); n != 1 {
		t.Errorf("progress said %d times that it waits, want once:\n%s", n, progress.String())
	}
}
