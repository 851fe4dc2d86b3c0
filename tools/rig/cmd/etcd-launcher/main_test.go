package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/launcher"
)

const table3 = `{"statefulSet":"main","token":"main-tok","members":[
	{"ordinal":0,"clientPort":2000,"peerPort":3000},
	{"ordinal":1,"clientPort":2001,"peerPort":3001},
	{"ordinal":2,"clientPort":2002,"peerPort":3002}]}`

// TestExecReplacesLauncher builds the launcher and runs it with a stand-in etcd that records its pid
// and arguments: the launcher must become etcd (same pid, so the pod runner's signals reach etcd)
// with the member's flags and the container's own ones, and refuse a pod without its certificate.
func TestExecReplacesLauncher(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "etcd-launcher")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
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
	members := filepath.Join(dir, launcher.TableKey)
	if err := os.WriteFile(members, []byte(table3), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(pod string) (*exec.Cmd, []byte, error) {
		cmd := exec.Command(bin, "--launcher-members="+members, "--launcher-tls-dir="+tls, "--data-dir=/v/data")
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
	f, err := launcher.FlagValues(lines[1:])
	if err != nil {
		t.Fatal(err)
	}
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
