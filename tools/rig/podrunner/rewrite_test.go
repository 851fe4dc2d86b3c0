package podrunner

import "testing"

func TestRewrite(t *testing.T) {
	rw := newPathRewriter([]mountMap{
		{Container: "/var/lib/etcd-snapshot", Host: "/h/pvc"},
		{Container: "/etc/etcd-snapshot/tls/", Host: "/h/secret"},
		{Container: "/etc/etcd-snapshot", Host: "/h/outer"},
		{Container: "/dev/termination-log", Host: "/h/pod/verify.termination-log"},
		{Container: "/", Host: "/h/root"},
		{Container: "relative", Host: "/h/rel"},
	})
	cases := []struct {
		name, in, want string
	}{
		{"whole path", "/var/lib/etcd-snapshot", "/h/pvc"},
		{"file below mount", "/var/lib/etcd-snapshot/snapshot.db", "/h/pvc/snapshot.db"},
		{"flag value", "-file=/var/lib/etcd-snapshot/snapshot.db", "-file=/h/pvc/snapshot.db"},
		{"nested mount wins", "--cacert=/etc/etcd-snapshot/tls/ca.crt", "--cacert=/h/secret/ca.crt"},
		{"outer mount", "/etc/etcd-snapshot/other", "/h/outer/other"},
		{"termination log", "-termination-log=/dev/termination-log", "-termination-log=/h/pod/verify.termination-log"},
		{"several in one string", "cp /var/lib/etcd-snapshot/a /etc/etcd-snapshot/tls/b", "cp /h/pvc/a /h/secret/b"},
		{"quoted", `"/var/lib/etcd-snapshot"`, `"/h/pvc"`},
		{"colon list", "a:/var/lib/etcd-snapshot:b", "a:/h/pvc:b"},
		{"longer name is another path", "/var/lib/etcd-snapshotX/f", "/var/lib/etcd-snapshotX/f"},
		{"suffix with dot is another file", "/dev/termination-log.bak", "/dev/termination-log.bak"},
		{"suffix with dash is another path", "/var/lib/etcd-snapshot-2", "/var/lib/etcd-snapshot-2"},
		{"inside another path", "/opt/var/lib/etcd-snapshot", "/opt/var/lib/etcd-snapshot"},
		{"after a name byte", "x/var/lib/etcd-snapshot", "x/var/lib/etcd-snapshot"},
		{"url-like double slash", "file:///var/lib/etcd-snapshot", "file:///var/lib/etcd-snapshot"},
		{"root mount ignored", "/usr/bin/env", "/usr/bin/env"},
		{"no path", "snapshot", "snapshot"},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := rw.Rewrite(tc.in); got != tc.want {
				t.Errorf("Rewrite(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestHostPath(t *testing.T) {
	rw := newPathRewriter([]mountMap{{Container: "/work", Host: "/h/w"}, {Container: "/work/sub", Host: "/h/s"}})
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"/work", "/h/w", true},
		{"/work/", "/h/w", true},
		{"/work/a/b", "/h/w/a/b", true},
		{"/work/sub/c", "/h/s/c", true},
		{"/workshop", "", false},
		{"/tmp", "", false},
	}
	for _, tc := range cases {
		got, ok := rw.HostPath(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("HostPath(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestExpandVars(t *testing.T) {
	env := map[string]string{"A": "1", "DIR": "/var/lib/x", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := []struct{ in, want string }{
		{"$(A)", "1"},
		{"x-$(A)-y", "x-1-y"},
		{"--data=$(DIR)/db", "--data=/var/lib/x/db"},
		{"$(MISSING)", "$(MISSING)"},
		{"$$(A)", "$(A)"},
		{"$$", "$"},
		{"$(EMPTY)!", "!"},
		{"$A", "$A"},
		{"$(A", "$(A"},
		{"tail$", "tail$"},
		{"$()", "$()"},
		{"no vars", "no vars"},
	}
	for _, tc := range cases {
		if got := expandVars(tc.in, lookup); got != tc.want {
			t.Errorf("expandVars(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
