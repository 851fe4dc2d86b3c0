package driver

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// logLeakChildEnv, when set to a directory, makes TestNoPrivateKeyInLogs act as the child process
// that runs the driver at -v=10 and writes the private key it used into that directory.
const logLeakChildEnv = "ETCD_SNAPSHOT_DRIVER_LOG_LEAK_DIR"

const logLeakDone = "log-leak-child: done"

// TestNoPrivateKeyInLogs runs the driver with the real glog and klog at -v=10 in a child process
// (logging flags are process-wide), sends requests whose secrets carry a generated private key, and
// checks the key appears nowhere in the logs, in any encoding the log path could produce. It does so
// once with -v alone and once with -vmodule asking client-go's request.go (which logs HTTP bodies at
// V(8)) and every other file for -v=10.
func TestNoPrivateKeyInLogs(t *testing.T) {
	if dir := os.Getenv(logLeakChildEnv); dir != "" {
		logLeakChild(t, dir)
		return
	}
	cases := []struct {
		name  string
		flags []string
	}{
		{name: "v", flags: []string{"-v=10"}},
		{name: "vmodule", flags: []string{"-v=10", "-vmodule=request=10,round_trippers=9"}},
		{name: "vmodule glob", flags: []string{"-v=2", "-vmodule=*=10"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkNoPrivateKeyInLogs(t, tc.flags) })
	}
}

// checkNoPrivateKeyInLogs runs the logging child with the given glog flags and checks its logs.
func checkNoPrivateKeyInLogs(t *testing.T, flags []string) {
	dir := t.TempDir()
	args := append([]string{"-test.run=^TestNoPrivateKeyInLogs$", "-test.count=1", "-test.v", "-test.timeout=5m"}, flags...)
	cmd := exec.Command(os.Args[0], append(args, "-logtostderr=true")...)
	cmd.Env = append(os.Environ(), logLeakChildEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	logs := string(out)
	if err != nil || !strings.Contains(logs, logLeakDone) {
		t.Fatalf("child process failed (%v); output tail:\n%s", err, logTail(logs, 4000))
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}

	// The detector must be able to fail: each form client-go or a careless log line would produce.
	body := strings.SplitN(string(keyPEM), "\n", 3)[1]
	for name, leak := range map[string]string{
		"JSON Secret":   `{"data":{"tls.key":"` + base64.StdEncoding.EncodeToString(keyPEM) + `"}}`,
		"protobuf dump": hex.Dump(append([]byte("\x0a\x07tls.key\x12\x8b"), keyPEM...)),
		"PEM body line": "key=" + body,
		"quoted PEM":    fmt.Sprintf("%q", strings.ReplaceAll(string(keyPEM), "PRIVATE KEY", "")),
	} {
		if leakOf(keyPEM, certPEM, leak) == "" {
			t.Fatalf("leak detector misses the key as %s", name)
		}
	}
	public := string(certPEM) + hex.Dump(certPEM) + base64.StdEncoding.EncodeToString(certPEM)
	if what := leakOf(keyPEM, certPEM, public); what != "" {
		t.Fatalf("leak detector flags the public certificate (%s)", what)
	}
	if what := leakOf(keyPEM, certPEM, logs); what != "" {
		t.Fatalf("the private key leaked into the logs (%s)", what)
	}

	// The logs were really at -v=10 with bodies: request bodies at V(5), secrets stripped, and
	// client-go logging its requests (V(6)) but not their bodies (V(8)).
	for _, want := range []string{
		"/csi.v1.GroupController/CreateVolumeGroupSnapshot request:",
		"/csi.v1.Controller/CreateSnapshot request:",
		"***stripped***",
		"/csi.v1.GroupController/CreateVolumeGroupSnapshot response:",
		`"Request" verb="POST"`,
		"/api/v1/namespaces/etcd-test/secrets",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if strings.Contains(logs, "Request Body") || strings.Contains(logs, "Response Body") {
		t.Error("client-go logged HTTP bodies")
	}
	// Every RPC error is logged exactly once.
	unknown := groupIDPrefix + strings.Repeat("0", 32)
	if n := strings.Count(logs, "GetVolumeGroupSnapshot failed: rpc error: code = NotFound desc = snapshot \""+unknown+"\""); n != 1 {
		t.Errorf("the NotFound of Get %s was logged %d times, want once", unknown, n)
	}
}

// leakOf describes how keyPEM shows up in logs, or returns "" when it does not. It looks for the PEM
// header, any 12 characters of a PEM body line (also what survives in the ASCII column of a hex dump),
// the whole PEM base64-encoded (a Secret's data in JSON), the DER in base64 or hex, and the PEM bytes
// as a hex dump prints them (client-go logs binary protobuf bodies that way). An EC private key embeds
// its public key, which the certificate certPEM carries too; fragments also found in the certificate's
// encodings are public and skipped.
func leakOf(keyPEM, certPEM []byte, logs string) string {
	if strings.Contains(logs, "PRIVATE KEY") {
		return `"PRIVATE KEY"`
	}
	block, _ := pem.Decode(keyPEM)
	certBlock, _ := pem.Decode(certPEM)
	if block == nil || certBlock == nil {
		return "unreadable key or certificate"
	}
	public := strings.Join([]string{string(certPEM), base64.StdEncoding.EncodeToString(certPEM),
		base64.StdEncoding.EncodeToString(certBlock.Bytes), hex.EncodeToString(certBlock.Bytes)}, "\n")
	found := func(fragment string) bool {
		return strings.Contains(logs, fragment) && !strings.Contains(public, fragment)
	}
	const w = 12
	for _, line := range strings.Split(string(keyPEM), "\n") {
		if strings.HasPrefix(line, "-----") {
			continue
		}
		for i := 0; i+w <= len(line); i++ {
			if found(line[i : i+w]) {
				return fmt.Sprintf("PEM body characters %q", line[i:i+w])
			}
		}
	}
	encodings := map[string]string{
		"PEM in base64": base64.StdEncoding.EncodeToString(keyPEM),
		"DER in base64": base64.StdEncoding.EncodeToString(block.Bytes),
		"DER in hex":    hex.EncodeToString(block.Bytes),
	}
	for name, enc := range encodings {
		for i := 0; i+2*w <= len(enc); i++ {
			if found(enc[i : i+2*w]) {
				return name
			}
		}
	}
	// A hex dump prints 16 bytes per line, "xx xx xx xx xx xx xx xx  xx ...": 6 bytes with single
	// spaces always fit in some half line.
	for i := 0; i+6 <= len(keyPEM); i++ {
		text := string(keyPEM[i : i+6])
		if strings.ContainsAny(text, "-\n") || strings.Contains(string(certPEM), text) {
			continue
		}
		var b strings.Builder
		for j, c := range []byte(text) {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%02x", c)
		}
		if strings.Contains(logs, b.String()) {
			return "PEM bytes in a hex dump"
		}
	}
	return ""
}

// logLeakChild is the child side: main's logging wiring, the driver at -v=10, and requests that carry
// the etcd cluster's generated client key.
func logLeakChild(t *testing.T, dir string) {
	if err := RouteKlog(flag.CommandLine); err != nil {
		t.Fatal(err)
	}
	// With -vmodule=*=10 and -v=2 only the file filter makes this file log at V(10).
	if !bool(glog.V(10)) || !klog.V(6).Enabled() {
		t.Fatal("child must log at V(10) here, and client-go at V(6)")
	}
	tc := startTestCluster(t, 3)
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), tc.Client.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), tc.Client.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	e := startCSI(t, etcdWorld(t, tc))
	ctx := context.Background()
	secrets := secretsOf(tc)
	sources := []string{pvHandle(fxNS, fxCluster, 0), fxNS + "/data-main-1"}

	create := &csi.CreateVolumeGroupSnapshotRequest{Name: "leak-1", SourceVolumeIds: sources, Secrets: secrets}
	resp, err := e.group.CreateVolumeGroupSnapshot(ctx, create)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.group.CreateVolumeGroupSnapshot(ctx, create); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "leak-2", SourceVolumeId: sources[0], Secrets: secrets}); err != nil {
		t.Fatal(err)
	}
	// Error paths with the key in the request: a CA that did not sign the servers, and a partial secret.
	otherCA, err := testpki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	badCA := map[string]string{secretKeyCA: string(otherCA.CertPEM()), secretKeyCert: secrets[secretKeyCert], secretKeyKey: secrets[secretKeyKey]}
	_, err = e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "leak-3", SourceVolumeIds: sources, Secrets: badCA})
	if err == nil {
		t.Fatal("Create with a foreign CA succeeded")
	}
	_, err = e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "leak-4", SourceVolumeIds: sources,
		Secrets: map[string]string{secretKeyKey: secrets[secretKeyKey]}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: groupIDPrefix + strings.Repeat("0", 32)})
	wantCode(t, err, codes.NotFound)
	if _, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: resp.GetGroupSnapshot().GetGroupSnapshotId()}); err != nil {
		t.Fatal(err)
	}

	// client-go against a real HTTP endpoint: what it would log talking to an API server while the
	// driver creates the credentials Secret. The server answers like one, echoing the object back.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
	}))
	defer api.Close()
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	secret := newTLSSecret(&Record{ID: "etcdgs-" + strings.Repeat("1", 32), Namespace: fxNS, Cluster: fxCluster}, tc.Creds())
	if _, err := kube.CoreV1().Secrets(fxNS).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	e.stop()
	glog.Flush()
	klog.Flush()
	fmt.Println(logLeakDone)
}

// logTail returns the last n bytes of s.
func logTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TestCapKlogVmodule checks the -vmodule rewrite RouteKlog hands to klog: each level is capped, and
// what klog would refuse stays as it is so klog still refuses it.
func TestCapKlogVmodule(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"empty", "", ""},
		{"below cap", "request=7,create=3", "request=7,create=3"},
		{"above cap", "request=10", "request=7"},
		{"glob and mixed", "*=10,driver=2,round_trippers=9", "*=7,driver=2,round_trippers=7"},
		{"signed and padded", "a=+20,b=020", "a=7,b=7"},
		{"trailing comma", "request=8,", "request=7,"},
		{"malformed kept", "a=b=20,c", "a=b=20,c"},
		{"not a number kept", "a=x", "a=x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := capKlogVmodule(tc.in); got != tc.want {
				t.Errorf("capKlogVmodule(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
