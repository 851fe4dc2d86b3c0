package driver

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestClusterTarget(t *testing.T) {
	svc := func(ns, name, cluster string, typ corev1.ServiceType, ext string, ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{fxClusterLabel: cluster}},
			Spec:       corev1.ServiceSpec{Type: typ, ExternalName: ext, Ports: ports},
		}
	}
	objs := []runtime.Object{
		svc("ext", "main-client", "main", corev1.ServiceTypeExternalName, "localhost", corev1.ServicePort{Name: "client", Port: 32379}),
		svc("cip", "main-peer", "main", corev1.ServiceTypeClusterIP, "", corev1.ServicePort{Name: "peer", Port: 2380}),
		svc("cip", "main-client", "main", corev1.ServiceTypeClusterIP, "", corev1.ServicePort{Name: "peer", Port: 2380}, corev1.ServicePort{Name: "client", Port: 12379}),
		svc("noport", "etcd", "main", corev1.ServiceTypeClusterIP, "", corev1.ServicePort{Name: "metrics", Port: 8080}),
		svc("ext", "other-client", "other", corev1.ServiceTypeClusterIP, "", corev1.ServicePort{Name: "client", Port: 1}),
	}
	f := newEngineFixture(t, objs...)
	secrets := map[string]string{secretKeyCA: "ca", secretKeyCert: "cert", secretKeyKey: "key"}

	cases := []struct {
		name      string
		ns        string
		params    map[string]string
		secrets   map[string]string
		fallback  *Credentials
		endpoints []string
		creds     string // the CA the target carries
		code      codes.Code
		msg       []string
	}{
		{name: "ExternalName service", ns: "ext", secrets: secrets, endpoints: []string{"https://localhost:32379"}, creds: "ca"},
		{name: "client port preferred over other services", ns: "cip", secrets: secrets, endpoints: []string{"https://main-client.cip.svc:12379"}, creds: "ca"},
		{name: "no client port means 2379", ns: "noport", secrets: secrets, endpoints: []string{"https://etcd.noport.svc:2379"}, creds: "ca"},
		{name: "endpoints parameter wins", ns: "ext", secrets: secrets, params: map[string]string{paramEndpoints: "https://a:1, b:2"},
			endpoints: []string{"https://a:1", "https://b:2"}, creds: "ca"},
		{name: "fallback credentials", ns: "ext", fallback: &Credentials{CA: []byte("flag-ca"), Cert: []byte("c"), Key: []byte("k")},
			endpoints: []string{"https://localhost:32379"}, creds: "flag-ca"},
		{name: "secrets beat fallback", ns: "ext", secrets: secrets, fallback: &Credentials{CA: []byte("flag-ca"), Cert: []byte("c"), Key: []byte("k")},
			endpoints: []string{"https://localhost:32379"}, creds: "ca"},
		{name: "plaintext opt-in without credentials", ns: "ext", params: map[string]string{paramAllowPlaintext: "true"},
			endpoints: []string{"http://localhost:32379"}},
		{name: "no credentials", ns: "ext", code: codes.InvalidArgument, msg: []string{"ca.crt", "tls.crt", "tls.key", "-etcd-ca"}},
		{name: "partial secret", ns: "ext", secrets: map[string]string{secretKeyCA: "ca", secretKeyCert: "c"}, code: codes.InvalidArgument,
			msg: []string{"lacks tls.key"}},
		{name: "plaintext endpoint without opt-in", ns: "ext", secrets: secrets, params: map[string]string{paramEndpoints: "http://a:1"},
			code: codes.InvalidArgument, msg: []string{"http://a:1", "allowPlaintext"}},
		{name: "malformed endpoint", ns: "ext", secrets: secrets, params: map[string]string{paramEndpoints: "https://"},
			code: codes.InvalidArgument, msg: []string{"endpoints", `"https://"`}},
		{name: "no service", ns: "empty", secrets: secrets, code: codes.FailedPrecondition, msg: []string{"etcd.io/cluster=main", "empty", "endpoints"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.engine.cfg.FallbackCreds = tc.fallback
			p, err := parseParams(tc.params)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.engine.clusterTarget(f.ctx, tc.ns, "main", p, tc.secrets)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Endpoints, tc.endpoints) || string(got.Creds.CA) != tc.creds || got.AllowPlaintext != p.AllowPlaintext || got.Timeout <= 0 {
				t.Errorf("target %+v; want endpoints %v with CA %q", got, tc.endpoints, tc.creds)
			}
		})
	}
}

func TestClientURL(t *testing.T) {
	m := &MemberStatus{Member: Member{ID: 0xabc, Name: "m0", ClientURLs: []string{"http://10.0.0.1:2379", "https://10.0.0.1:2379"}}}
	if u, err := clientURL(m, true, false); err != nil || u != "https://10.0.0.1:2379" {
		t.Errorf("with credentials: %q, %v", u, err)
	}
	if u, err := clientURL(m, false, true); err != nil || u != "http://10.0.0.1:2379" {
		t.Errorf("plaintext allowed: %q, %v", u, err)
	}
	if _, err := clientURL(m, false, false); status.Code(err) != codes.FailedPrecondition || !hasAll(err.Error(), "m0", "abc") {
		t.Errorf("nothing usable: %v", err)
	}
}
