package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const table3 = `{"statefulSet":"main","token":"main-tok","members":[
	{"ordinal":2,"clientPort":2002,"peerPort":3002},
	{"ordinal":0,"clientPort":2000,"peerPort":3000},
	{"ordinal":1,"clientPort":2001,"peerPort":3001}]}`

func mustTable(t *testing.T, s string) *Table {
	t.Helper()
	tb, err := ParseTable([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestOrdinal(t *testing.T) {
	tb := mustTable(t, table3)
	cases := []struct {
		name    string
		pod     string
		want    int
		wantErr string
	}{
		{name: "first", pod: "main-0", want: 0},
		{name: "last", pod: "main-2", want: 2},
		{name: "beyond the table", pod: "main-3", wantErr: "ordinal 3 has no entry"},
		{name: "other set", pod: "other-1", wantErr: `of StatefulSet "main"`},
		{name: "set name with a dash prefix", pod: "my-main-1", wantErr: `of StatefulSet "main"`},
		{name: "no ordinal", pod: "main", wantErr: "is not <statefulset>-<ordinal>"},
		{name: "leading zero", pod: "main-01", wantErr: "is not an ordinal"},
		{name: "sign", pod: "main-+1", wantErr: "is not an ordinal"},
		{name: "negative", pod: "main--1", wantErr: "is not <statefulset>-<ordinal>"},
		{name: "empty ordinal", pod: "main-", wantErr: "is not an ordinal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tb.Ordinal(tc.pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Ordinal(%q) = %d, %v; want an error containing %q", tc.pod, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Ordinal(%q) = %d, %v; want %d", tc.pod, got, err, tc.want)
			}
		})
	}

	// A StatefulSet whose own name ends in -<digits> still maps by the last dash.
	dashed := mustTable(t, `{"statefulSet":"etcd-2","token":"x","members":[{"ordinal":0,"clientPort":1,"peerPort":2},{"ordinal":1,"clientPort":3,"peerPort":4}]}`)
	if got, err := dashed.Ordinal("etcd-2-1"); err != nil || got != 1 {
		t.Errorf("Ordinal(etcd-2-1) of set etcd-2 = %d, %v; want 1", got, err)
	}
}

func TestParseTableRefusals(t *testing.T) {
	cases := []struct {
		name, table, wantErr string
	}{
		{"not json", `{`, "member table"},
		{"unknown field", `{"statefulSet":"m","token":"t","members":[{"ordinal":0,"clientPort":1,"peerPort":2}],"extra":1}`, "unknown field"},
		{"no set", `{"token":"t","members":[{"ordinal":0,"clientPort":1,"peerPort":2}]}`, "statefulSet is empty"},
		{"no token", `{"statefulSet":"m","members":[{"ordinal":0,"clientPort":1,"peerPort":2}]}`, "token is empty"},
		{"no members", `{"statefulSet":"m","token":"t","members":[]}`, "no members"},
		{"gap", `{"statefulSet":"m","token":"t","members":[{"ordinal":0,"clientPort":1,"peerPort":2},{"ordinal":2,"clientPort":3,"peerPort":4}]}`, "ordinals must be 0..1"},
		{"duplicate ordinal", `{"statefulSet":"m","token":"t","members":[{"ordinal":0,"clientPort":1,"peerPort":2},{"ordinal":0,"clientPort":3,"peerPort":4}]}`, "ordinals must be"},
		{"zero port", `{"statefulSet":"m","token":"t","members":[{"ordinal":0,"clientPort":0,"peerPort":2}]}`, "clientPort 0 is not a TCP port"},
		{"port too large", `{"statefulSet":"m","token":"t","members":[{"ordinal":0,"clientPort":1,"peerPort":70000}]}`, "peerPort 70000 is not a TCP port"},
		{"shared port", `{"statefulSet":"m","token":"t","members":[{"ordinal":0,"clientPort":1,"peerPort":2},{"ordinal":1,"clientPort":3,"peerPort":1}]}`, "port 1 is both the clientPort of ordinal 0 and the peerPort of ordinal 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTable([]byte(tc.table))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseTable: %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// flagValues turns --k=v and bare --k arguments into a map (a bare flag maps to "").
func flagValues(t *testing.T, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if _, dup := out[k]; dup {
			t.Fatalf("flag --%s given twice in %q", k, args)
		}
		out[k] = v
	}
	return out
}

func TestEtcdArgs(t *testing.T) {
	tb := mustTable(t, table3)
	const initial = "main-0=https://127.0.0.1:3000,main-1=https://127.0.0.1:3001,main-2=https://127.0.0.1:3002"
	cases := []struct {
		pod              string
		client, peer     string
		extra            []string
		wantDataDir      string
		wantElectionTime string
	}{
		{pod: "main-0", client: "https://127.0.0.1:2000", peer: "https://127.0.0.1:3000"},
		{pod: "main-1", client: "https://127.0.0.1:2001", peer: "https://127.0.0.1:3001",
			extra: []string{"--data-dir=/v/data", "--election-timeout=2000"}, wantDataDir: "/v/data", wantElectionTime: "2000"},
		{pod: "main-2", client: "https://127.0.0.1:2002", peer: "https://127.0.0.1:3002"},
	}
	for _, tc := range cases {
		t.Run(tc.pod, func(t *testing.T) {
			args, err := tb.EtcdArgs(tc.pod, "/tls", tc.extra)
			if err != nil {
				t.Fatal(err)
			}
			f := flagValues(t, args)
			want := map[string]string{
				"name":                        tc.pod,
				"listen-client-urls":          tc.client,
				"advertise-client-urls":       tc.client,
				"listen-peer-urls":            tc.peer,
				"initial-advertise-peer-urls": tc.peer,
				"initial-cluster":             initial,
				"initial-cluster-token":       "main-tok",
				"initial-cluster-state":       "new",
				"client-cert-auth":            "",
				"peer-client-cert-auth":       "",
				"trusted-ca-file":             "/tls/ca.crt",
				"peer-trusted-ca-file":        "/tls/ca.crt",
				"cert-file":                   "/tls/" + tc.pod + ".crt",
				"peer-cert-file":              "/tls/" + tc.pod + ".crt",
				"key-file":                    "/tls/" + tc.pod + ".key",
				"peer-key-file":               "/tls/" + tc.pod + ".key",
			}
			if tc.wantDataDir != "" {
				want["data-dir"], want["election-timeout"] = tc.wantDataDir, tc.wantElectionTime
			}
			for k, v := range want {
				if got, ok := f[k]; !ok || got != v {
					t.Errorf("--%s = %q (set %v), want %q", k, got, ok, v)
				}
			}
			if len(f) != len(want) {
				t.Errorf("flags %v, want exactly %v", f, want)
			}
		})
	}

	for _, owned := range []string{"--name=x", "--initial-cluster-state=existing", "-cert-file=/x", "--peer-client-cert-auth"} {
		if _, err := tb.EtcdArgs("main-0", "/tls", []string{"--data-dir=/d", owned}); err == nil || !strings.Contains(err.Error(), "set by the launcher") {
			t.Errorf("extra %s: %v; want a refusal naming the flag", owned, err)
		}
	}
	if _, err := tb.EtcdArgs("main-7", "/tls", nil); err == nil {
		t.Error("EtcdArgs of an ordinal beyond the table: no error")
	}
}

func TestParseArgs(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
		want    options
	}{
		{name: "all", args: []string{"--launcher-members=/m", "--data-dir=/d", "--launcher-tls-dir=/t", "--launcher-etcd=/bin/etcd", "--log-level", "warn"},
			want: options{membersFile: "/m", tlsDir: "/t", etcd: "/bin/etcd", extra: []string{"--data-dir=/d", "--log-level", "warn"}}},
		{name: "default etcd", args: []string{"--launcher-members=/m", "--launcher-tls-dir=/t"}, want: options{membersFile: "/m", tlsDir: "/t", etcd: "etcd"}},
		{name: "no table", args: []string{"--launcher-tls-dir=/t"}, wantErr: "--launcher-members"},
		{name: "no tls", args: []string{"--launcher-members=/m"}, wantErr: "--launcher-tls-dir"},
		{name: "no value", args: []string{"--launcher-members", "/m"}, wantErr: "needs a value"},
		{name: "unknown", args: []string{"--launcher-member=/m"}, wantErr: "unknown flag --launcher-member=/m"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseArgs(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseArgs: %v; want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.membersFile != tc.want.membersFile || got.tlsDir != tc.want.tlsDir || got.etcd != tc.want.etcd ||
				strings.Join(got.extra, " ") != strings.Join(tc.want.extra, " ") {
				t.Fatalf("parseArgs = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestExecReplacesLauncher builds the launcher and runs it with a stand-in etcd that records its pid
// and arguments: the launcher must become etcd (same pid, so the pod runner's signals reach etcd)
// with the member's flags and the container's own ones, and refuse a pod without its certificate.
func TestExecReplacesLauncher(t *testing.T) {
	dir := t.TempDir()
	launcher := filepath.Join(dir, "etcd-launcher")
	if out, err := exec.Command("go", "build", "-o", launcher, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	record := filepath.Join(dir, "record")
	fakeEtcd := filepath.Join(dir, "etcd")
	script := "#!/bin/sh\necho $$ > " + record + "\nfor a in \"$@\"; do echo \"$a\" >> " + record + "; done\n"
	if err := os.WriteFile(fakeEtcd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tls := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tls, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "main-1.crt", "main-1.key"} {
		if err := os.WriteFile(filepath.Join(tls, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	members := filepath.Join(dir, TableKey)
	if err := os.WriteFile(members, []byte(table3), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(pod string) (*exec.Cmd, []byte, error) {
		cmd := exec.Command(launcher, "--launcher-members="+members, "--launcher-tls-dir="+tls, "--data-dir=/v/data")
		cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "POD_NAME=" + pod}
		out, err := cmd.CombinedOutput()
		return cmd, out, err
	}

	cmd, out, err := run("main-1")
	if err != nil {
		t.Fatalf("launcher: %v\n%s", err, out)
	}
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if pid, _ := strconv.Atoi(lines[0]); pid != cmd.Process.Pid {
		t.Errorf("etcd ran as pid %d, the launcher as %d: the launcher did not exec etcd", pid, cmd.Process.Pid)
	}
	f := flagValues(t, lines[1:])
	if f["name"] != "main-1" || f["listen-peer-urls"] != "https://127.0.0.1:3001" || f["data-dir"] != "/v/data" ||
		f["cert-file"] != filepath.Join(tls, "main-1.crt") {
		t.Errorf("etcd flags %v: want member main-1's name, peer URL and certificate and the container's --data-dir", f)
	}
	if !strings.Contains(string(out), "pod main-1 is member 1 of 3") {
		t.Errorf("launcher output %q does not say which member it started", out)
	}

	// main-2 has no certificate in the TLS directory: refused before etcd starts.
	os.Remove(record)
	_, out, err = run("main-2")
	if err == nil || !strings.Contains(string(out), "TLS file of member main-2") {
		t.Errorf("launcher without main-2's certificate: %v\n%s", err, out)
	}
	if _, err := os.Stat(record); err == nil {
		t.Error("etcd was started for a member without its certificate")
	}
	_, out, err = run("")
	if err == nil || !strings.Contains(string(out), "POD_NAME is not set") {
		t.Errorf("launcher without POD_NAME: %v\n%s", err, out)
	}
}
