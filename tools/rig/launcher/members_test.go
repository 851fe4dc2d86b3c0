package launcher

import (
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
			f, err := FlagValues(args)
			if err != nil {
				t.Fatal(err)
			}
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
