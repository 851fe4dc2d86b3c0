package main

import (
	"bytes"
	"flag"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// commandLine is a fresh flag set carrying glog's flags (registered on flag.CommandLine by glog's
// init), as main's flag.CommandLine does, so run can be called more than once in a test.
func commandLine() *flag.FlagSet {
	fs := flag.NewFlagSet("etcd-snapshot-driver", flag.ContinueOnError)
	flag.CommandLine.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Name, "test.") {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
	return fs
}

func TestFlagDefaults(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var o options
	registerFlags(fs, &o)
	want := map[string]string{
		"endpoint":                       "unix:///csi/csi.sock",
		"driver-name":                    "etcd-snapshot.csi.io",
		"http-address":                   ":8080",
		"kubeconfig":                     "",
		"cluster-label":                  "etcd.io/cluster",
		"metadata-namespace":             "kube-system",
		"etcd-image":                     "gcr.io/etcd-development/etcd:v3.7.3",
		"driver-image":                   "ghcr.io/etcd-snapshot-driver/etcd-snapshot-driver:" + version,
		"etcd-ca":                        "",
		"etcd-cert":                      "",
		"etcd-key":                       "",
		"snapshot-storage-class":         "",
		"health-timeout":                 "10s",
		"sweep-grace":                    "10m0s",
		"create-wait":                    "5s",
		"kube-api-qps":                   "50",
		"kube-api-burst":                 "100",
		"version":                        "false",
		"leader-election":                "true",
		"leader-election-namespace":      "",
		"leader-election-lease-duration": "15s",
		"leader-election-renew-deadline": "10s",
		"leader-election-retry-period":   "2s",
	}
	checkFlagDefaults(t, fs, want)
}

// checkFlagDefaults checks that fs defines exactly the flags of want, each with its default.
func checkFlagDefaults(t *testing.T, fs *flag.FlagSet, want map[string]string) {
	t.Helper()
	seen := 0
	fs.VisitAll(func(f *flag.Flag) {
		seen++
		w, ok := want[f.Name]
		if !ok {
			t.Errorf("flag -%s is not in the expected list", f.Name)
		} else if f.DefValue != w {
			t.Errorf("-%s defaults to %q, want %q", f.Name, f.DefValue, w)
		}
	})
	if seen != len(want) {
		t.Errorf("%d flags, want %d", seen, len(want))
	}
}

// TestRestoreFlagDefaults checks every flag of `restore` and its default, and that the flags it
// shares with the driver default alike, so a restore finds what a driver with default flags made.
func TestRestoreFlagDefaults(t *testing.T) {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	var o restoreOptions
	registerRestoreFlags(fs, &o)
	want := map[string]string{
		"kubeconfig": "", "context": "", "namespace": "", "group-snapshot": "", "volume-snapshot": "", "snapshot-id": "",
		"driver-name":        "etcd-snapshot.csi.io",
		"metadata-namespace": "kube-system",
		"cluster-label":      "etcd.io/cluster",
		"etcd-image":         "gcr.io/etcd-development/etcd:v3.7.3",
		"driver-image":       "ghcr.io/etcd-snapshot-driver/etcd-snapshot-driver:" + version,
		"target-namespace":   "", "statefulset": "", "claim-template": "", "members": "0", "storage-class": "", "size": "",
		"peer-url-template": "", "peer-urls": "", "service": "", "member-pvc": "", "data-dir-in-volume": "", "uid": "", "gid": "",
		"bump-revision": "1000000000",
		"scale":         "false", "wait": "false", "delete-old-data": "false", "restore-id": "", "endpoints": "",
		"etcd-ca": "", "etcd-cert": "", "etcd-key": "", "credentials-secret": "",
		"timeout": "5m0s",
	}
	driverFlags := flag.NewFlagSet("driver", flag.ContinueOnError)
	registerFlags(driverFlags, &options{})
	checkFlagDefaults(t, fs, want)
	for _, name := range []string{"driver-name", "metadata-namespace", "cluster-label", "etcd-image", "driver-image"} {
		if r, d := fs.Lookup(name).DefValue, driverFlags.Lookup(name).DefValue; r != d {
			t.Errorf("restore -%s defaults to %q, the driver's to %q", name, r, d)
		}
	}
}

func TestRunVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(commandLine(), []string{"-version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if got := stdout.String(); got != "etcd-snapshot-driver dev\n" {
		t.Fatalf("-version printed %q", got)
	}
}

func TestRunUsageErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"-no-such-flag"}, "no-such-flag"},
		{"unknown subcommand", []string{"backup"}, `unexpected arguments ["backup"]; the subcommands are restore, verify, prepare-save and restore-step`},
		{"restore without a source", []string{"restore"}, "restore: give exactly one of -group-snapshot, -volume-snapshot and -snapshot-id"},
		{"restore with a bad flag", []string{"restore", "-group-snapshot=a", "-uid=-1"}, `invalid value "-1" for flag -uid`},
		{"restore-step without a step", []string{"restore-step"}, "restore-step"},
		{"verify without -file", []string{"verify"}, "-file"},
		{"prepare-save without -file", []string{"prepare-save"}, "-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(commandLine(), tc.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr %q does not mention %q", stderr.String(), tc.want)
			}
		})
	}
}

// TestRunHelpListsSubcommands checks -h names every subcommand, from the table run dispatches on.
func TestRunHelpListsSubcommands(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(commandLine(), []string{"-h"}, &stdout, &stderr); code != 2 {
		t.Fatalf("-h: exit %d, want 2", code)
	}
	for _, name := range []string{"restore", "verify", "prepare-save", "restore-step"} {
		if !strings.Contains(stderr.String(), "\n  "+name+" ") {
			t.Errorf("-h output does not list the subcommand %s:\n%s", name, stderr.String())
		}
	}
}

// TestRestoreStepFlagErrors checks what the flag parsing of restore-step rejects is a usage error that
// changes nothing on the volume; driver's TestRestoreStepRejectsBadFlags checks the flags' values.
func TestRestoreStepFlagErrors(t *testing.T) {
	vol := t.TempDir()
	for name, content := range map[string]string{"data/member/snap/db": "old member", "data.restore-r1/member/snap/db": "half a db"} {
		path := filepath.Join(vol, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := readTree(t, vol)
	stepArgs := func(step string, extra ...string) []string {
		return append([]string{step, "-volume=" + vol, "-data-dir=data", "-restore-id=r1"}, extra...)
	}
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"no step", nil, []string{"usage", "prepare|swap"}},
		{"unknown step", []string{"restore", "-volume=" + vol}, []string{"usage", "prepare|swap"}},
		{"extra argument", stepArgs("swap", "more"), []string{"unexpected argument", `"more"`}},
		{"-delete-old on prepare", stepArgs("prepare", "-delete-old"), []string{"-delete-old"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			termLog := filepath.Join(t.TempDir(), "termination-log")
			var stdout, stderr bytes.Buffer
			args := tc.args
			if len(args) > 0 {
				args = append([]string{args[0], "-termination-log=" + termLog}, args[1:]...)
			}
			if code := run(commandLine(), append([]string{"restore-step"}, args...), &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q does not contain %q", stderr.String(), w)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			if after := readTree(t, vol); !maps.Equal(after, before) {
				t.Errorf("volume changed: %v, was %v", after, before)
			}
		})
	}
}

// TestRestoreStepParsesJobArgs runs restore-step swap with the flags a restore Job passes
// (driver/restorejob.go), -delete-old last: parsed, the step runs and fails on a volume with nothing
// restored (1, not the usage error 2).
func TestRestoreStepParsesJobArgs(t *testing.T) {
	vol, termLog := t.TempDir(), filepath.Join(t.TempDir(), "termination-log")
	var stdout, stderr bytes.Buffer
	code := run(commandLine(), []string{"restore-step", "swap", "-volume=" + vol, "-data-dir=data", "-restore-id=r1", "-termination-log=" + termLog, "-delete-old"}, &stdout, &stderr)
	logged, _ := os.ReadFile(termLog)
	if code != 1 || !strings.HasPrefix(string(logged), "restore-step swap r1 in "+vol+": ") {
		t.Fatalf("exit %d, termination log %q, stderr %q; want 1 and the step's failure", code, logged, stderr.String())
	}
}

// readTree maps each path below dir to its mode and, for a file, its content.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		tree[rel] = info.Mode().String()
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			tree[rel] += " " + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read tree %s: %v", dir, err)
	}
	return tree
}

func TestRunVerifyDispatch(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "snapshot.db")
	termLog := filepath.Join(dir, "termination-log")
	var stdout, stderr bytes.Buffer
	code := run(commandLine(), []string{"verify", "-file=" + missing, "-termination-log=" + termLog}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), missing) {
		t.Fatalf("verify of a missing file: exit %d, stderr %q; want 1 naming the file", code, stderr.String())
	}
	if b, err := os.ReadFile(termLog); err != nil || !strings.Contains(string(b), missing) {
		t.Fatalf("termination log %q (%v) does not name the file", b, err)
	}
}

func TestRunRefusesBadConfiguration(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(commandLine(), []string{"-kubeconfig=" + filepath.Join(t.TempDir(), "absent"), "-endpoint=unix:///tmp/x.sock"}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d with an unreadable kubeconfig, want 1", code)
	}
}

func TestRouteKlogFollowsGlog(t *testing.T) {
	fs := commandLine()
	t.Cleanup(func() {
		fs.Set("v", "0")
		if err := driver.RouteKlog(fs); err != nil {
			t.Error(err)
		}
	})
	cases := []struct {
		v             string
		on, off       klog.Level
		wantKlogLimit string
	}{
		{"3", 3, 4, "follows -v"},
		{"7", 7, 8, "follows -v"},
		{"10", 7, 8, "capped at 7: client-go logs HTTP bodies (Secrets) from 8 on"},
	}
	for _, tc := range cases {
		if err := fs.Parse([]string{"-v=" + tc.v}); err != nil {
			t.Fatal(err)
		}
		if err := driver.RouteKlog(fs); err != nil {
			t.Fatal(err)
		}
		if !klog.V(tc.on).Enabled() || klog.V(tc.off).Enabled() {
			t.Errorf("-v=%s: klog V(%d) enabled=%t, V(%d) enabled=%t; want %s", tc.v, tc.on, klog.V(tc.on).Enabled(), tc.off, klog.V(tc.off).Enabled(), tc.wantKlogLimit)
		}
	}
}

func TestFallbackCredentials(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue("client")
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	if err := kp.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}

	if c, err := fallbackCredentials("", "", ""); c != nil || err != nil {
		t.Errorf("no flags = %v, %v; want nil, nil", c, err)
	}
	if _, err := fallbackCredentials(caFile, certFile, ""); err == nil || !strings.Contains(err.Error(), "give all three or none") {
		t.Errorf("two of three flags = %v", err)
	}
	if _, err := fallbackCredentials(caFile, certFile, filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "-etcd-key") {
		t.Errorf("unreadable key file = %v, want an error naming -etcd-key", err)
	}
	c, err := fallbackCredentials(caFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.CA, ca.CertPEM()) || !bytes.Equal(c.Cert, kp.CertPEM) || !bytes.Equal(c.Key, kp.KeyPEM) {
		t.Error("credentials do not hold the files' contents")
	}
}

// testKubeconfig writes a kubeconfig for an apiserver that is never contacted.
func testKubeconfig(t *testing.T) string {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

func TestConfigFromFlags(t *testing.T) {
	kubeconfig := testKubeconfig(t)
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var o options
	registerFlags(fs, &o)
	if err := fs.Parse([]string{"-kubeconfig=" + kubeconfig, "-driver-name=example.csi.io", "-cluster-label=app.example/etcd",
		"-snapshot-storage-class=fast", "-health-timeout=3s", "-sweep-grace=90s", "-create-wait=2s"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config(o)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DriverName != "example.csi.io" || cfg.Version != version || cfg.Endpoint != "unix:///csi/csi.sock" || cfg.HTTPAddress != ":8080" ||
		cfg.Snapshots == nil || cfg.Engine.Kube == nil || cfg.Engine.ClusterLabel != "app.example/etcd" ||
		cfg.Engine.MetadataNamespace != "kube-system" || cfg.Engine.SnapshotStorageClass != "fast" ||
		cfg.Engine.HealthTimeout != 3*time.Second || cfg.Engine.SweepGrace != 90*time.Second || cfg.Engine.CreateWait != 2*time.Second || cfg.Engine.FallbackCreds != nil ||
		cfg.Engine.DriverImage != driver.DriverImageRepository+":"+version || cfg.Engine.EtcdImage != "gcr.io/etcd-development/etcd:v3.7.3" {
		t.Fatalf("config = %+v", cfg)
	}
}

func TestConfigRefusesNegativeCreateWait(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var o options
	registerFlags(fs, &o)
	if err := fs.Parse([]string{"-kubeconfig=" + testKubeconfig(t), "-create-wait=-1s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := config(o); err == nil || err.Error() != "-create-wait -1s: must not be negative" {
		t.Fatalf("config = %v, want the -create-wait error", err)
	}
}

func TestKubeRESTConfigRateLimits(t *testing.T) {
	kubeconfig := testKubeconfig(t)
	cases := []struct {
		name      string
		args      []string
		wantQPS   float32
		wantBurst int
		wantErr   string
	}{
		{name: "defaults", wantQPS: 50, wantBurst: 100},
		{name: "set", args: []string{"-kube-api-qps=7.5", "-kube-api-burst=15"}, wantQPS: 7.5, wantBurst: 15},
		{name: "zero qps", args: []string{"-kube-api-qps=0"}, wantErr: "-kube-api-qps 0: must be more than 0"},
		{name: "negative qps", args: []string{"-kube-api-qps=-1"}, wantErr: "-kube-api-qps -1: must be more than 0"},
		{name: "zero burst", args: []string{"-kube-api-burst=0"}, wantErr: "-kube-api-burst 0: must be at least 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			var o options
			registerFlags(fs, &o)
			if err := fs.Parse(append([]string{"-kubeconfig=" + kubeconfig}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			rc, err := kubeRESTConfig(o)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("kubeRESTConfig = %v, want error %q", err, tc.wantErr)
				}
				if _, err := config(o); err == nil || err.Error() != tc.wantErr {
					t.Fatalf("config = %v, want error %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.QPS != tc.wantQPS || rc.Burst != tc.wantBurst || rc.UserAgent != "etcd-snapshot-driver/"+version {
				t.Fatalf("QPS %v, burst %d, user agent %q; want %v, %d", rc.QPS, rc.Burst, rc.UserAgent, tc.wantQPS, tc.wantBurst)
			}
		})
	}
}
