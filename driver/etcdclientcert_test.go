package driver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// certAuthority is a CA made by the test itself, so the test controls every field of what it signs.
type certAuthority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

func newCertAuthority(t *testing.T, name string) *certAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name, Organization: []string{"etcd-snapshot-driver tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &certAuthority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// clientCert is a certificate for subject cn signed by ca, shaped by edit, with key in the given
// PEM form: "PKCS1" and "PKCS8-RSA" (RSA 2048), "EC" (SEC 1) and "PKCS8-EC" (P-256), "PKCS8-Ed25519".
func (ca *certAuthority) clientCert(t *testing.T, cn, keyForm string, edit func(*x509.Certificate)) (certPEM, keyPEM []byte) {
	t.Helper()
	var key crypto.Signer
	var err error
	switch keyForm {
	case "PKCS1", "PKCS8-RSA":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case "EC", "PKCS8-EC":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "PKCS8-Ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown key form %q", keyForm)
	}
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"platform"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	switch keyForm {
	case "PKCS1":
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))}
	case "EC":
		b, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
	default:
		b, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(block)
}

// startClusterTrusting starts a test cluster whose client port also trusts client certificates of
// extra, as a cluster with a separate client CA does.
func startClusterTrusting(t *testing.T, extra *certAuthority) *testCluster {
	t.Helper()
	bundle := filepath.Join(t.TempDir(), "client-ca-bundle.crt")
	return startTestClusterWith(t, 3, func(cfg *embed.Config) {
		own, err := os.ReadFile(cfg.ClientTLSInfo.TrustedCAFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bundle, append(own, extra.pem...), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.ClientTLSInfo.TrustedCAFile = bundle
	})
}

// TestClientCertificateProblems presents client certificates a real etcd refuses, and checks each
// refusal says what is wrong and which certificate it is (subject, issuer, dates) without any of its
// key; for those the driver refuses before connecting, it checks that etcd itself refuses them too.
func TestClientCertificateProblems(t *testing.T) {
	clientCA := newCertAuthority(t, "etcd-client-ca")
	rogueCA := newCertAuthority(t, "rogue-ca")
	tc := startClusterTrusting(t, clientCA)
	day := 24 * time.Hour

	cases := []struct {
		name string
		ca   *certAuthority
		edit func(*x509.Certificate)
		// want are fragments of the message beyond the subject and dates every case must name.
		want []string
		// local is true when the driver refuses without a handshake; etcd's own alert is then checked.
		local bool
		alert string
	}{
		{name: "expired", ca: clientCA, local: true, alert: "expired certificate",
			edit: func(c *x509.Certificate) { c.NotBefore, c.NotAfter = time.Now().Add(-3*day), time.Now().Add(-day) },
			want: []string{"expired 24h0m"}},
		// crypto/tls answers a certificate outside its validity either way with the same alert.
		{name: "not yet valid", ca: clientCA, local: true, alert: "expired certificate",
			edit: func(c *x509.Certificate) { c.NotBefore, c.NotAfter = time.Now().Add(day), time.Now().Add(3*day) },
			want: []string{"not valid yet", "clock"}},
		{name: "server-only usage", ca: clientCA, local: true, alert: "bad certificate",
			edit: func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} },
			want: []string{"not for client authentication", "serverAuth", "clientAuth"}},
		{name: "signed by a CA etcd does not trust", ca: rogueCA,
			want: []string{"certificate required", "not signed by any of them", `issuer "` + rogueCA.cert.Subject.String() + `"`, "does not chain to the CA bundle"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			certPEM, keyPEM := c.ca.clientCert(t, "backup-"+strings.ReplaceAll(c.name, " ", "-"), "EC", c.edit)
			leaf := parseCertPEM(t, certPEM)
			target := tc.target()
			target.Creds = Credentials{CA: tc.CA.CertPEM(), Cert: certPEM, Key: keyPEM}
			start := time.Now()
			h, err := CheckCluster(context.Background(), target)
			if status.Code(err) != codes.FailedPrecondition || h != nil {
				t.Fatalf("CheckCluster = %+v, %v; want FailedPrecondition and no health", h, err)
			}
			msg := status.Convert(err).Message()
			want := append([]string{
				`subject "` + leaf.Subject.String() + `"`,
				leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339),
			}, c.want...)
			for _, w := range want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			if what := leakOf(keyPEM, certPEM, msg); what != "" {
				t.Errorf("message carries key material (%s): %s", what, msg)
			}
			if class, complete := healthOutcome(err); class != failTLS || complete {
				t.Errorf("outcome = %q complete %v, want tls and incomplete", class, complete)
			}
			if d := time.Since(start); c.local && d > time.Second {
				t.Errorf("a locally refused certificate took %s: it should not wait for the network", d)
			}
			if !c.local {
				return
			}
			// The refusal is etcd's rule, not the driver's: the same certificate in a bare handshake
			// gets etcd's alert.
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool(), Certificates: []tls.Certificate{pair}}
			cfg.RootCAs.AddCert(parseCertPEM(t, tc.CA.CertPEM()))
			alert := probeTLS(context.Background(), tc.ClientURLs[0], cfg)
			if alert == nil || !strings.Contains(alert.Error(), c.alert) {
				t.Errorf("etcd's own answer to the certificate = %v, want the alert %q", alert, c.alert)
			}
		})
	}
}

// TestClientKeyForms checks that a client key in each PEM form operators meet loads and works
// against a real etcd: RSA in PKCS#1 and PKCS#8, ECDSA in SEC 1 and PKCS#8, Ed25519 in PKCS#8.
func TestClientKeyForms(t *testing.T) {
	clientCA := newCertAuthority(t, "etcd-client-ca")
	tc := startClusterTrusting(t, clientCA)
	for _, form := range []string{"PKCS1", "PKCS8-RSA", "EC", "PKCS8-EC", "PKCS8-Ed25519"} {
		t.Run(form, func(t *testing.T) {
			certPEM, keyPEM := clientCA.clientCert(t, "backup-"+strings.ToLower(form), form, nil)
			target := tc.target()
			target.Creds = Credentials{CA: tc.CA.CertPEM(), Cert: certPEM, Key: keyPEM}
			h, err := CheckCluster(context.Background(), target)
			if err != nil {
				t.Fatalf("CheckCluster with a %s key: %v", form, err)
			}
			if h.HealthyVoters != 3 || h.Source == nil {
				t.Errorf("health = %+v, want 3 healthy voters and a source", h)
			}
		})
	}
}

// TestCheckClientCertNoUsageMeansAny keeps a certificate without extended key usage acceptable, as
// x509 verification (and so etcd) treats it.
func TestCheckClientCertNoUsageMeansAny(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name string
		eku  []x509.ExtKeyUsage
		ok   bool
	}{
		{"none", nil, true},
		{"client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, true},
		{"any", []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, true},
		{"server and client", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true},
		{"code signing", []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			leaf := &x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: c.eku}
			if err := checkClientCert(leaf, now); (err == nil) != c.ok {
				t.Errorf("checkClientCert = %v, want ok %v", err, c.ok)
			}
		})
	}
}

func parseCertPEM(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCheckClusterSnapshotPermission enables etcd auth on a cluster with client certificate
// authentication, where the certificate's common name is the etcd user, and checks that the health
// check refuses users `etcdctl snapshot save` would be refused for, and passes a root user; the
// refusal is also what etcd itself answers to a Snapshot call by that user.
func TestCheckClusterSnapshotPermission(t *testing.T) {
	clientCA := newCertAuthority(t, "etcd-client-ca")
	tc := startClusterTrusting(t, clientCA)
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	// root, the test cluster's own client (so its helpers keep working) and a reader without root.
	for user, roles := range map[string][]string{"root": {"root"}, "etcd-test-client": {"root"}, "backup-reader": {"reader"}} {
		// No password: these users log in by certificate common name, and bcrypt hashing a password
		// takes seconds under -race on a busy machine.
		if _, err := tc.cli.UserAddWithOptions(ctx, user, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil {
			t.Fatal(err)
		}
		for _, role := range roles {
			if role != "root" {
				if _, err := tc.cli.RoleAdd(ctx, role); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := tc.cli.UserGrantRole(ctx, user, role); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := tc.cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		cn   string
		want []string // empty: the check passes
		// etcd is etcd's own refusal of a Snapshot by this user.
		etcd string
	}{
		{cn: "root"},
		{cn: "backup-reader", want: []string{`user "backup-reader"`, "[reader]", "needs the root role"}, etcd: "permission denied"},
		{cn: "nobody", want: []string{`no user "nobody"`, "needs the root role"}, etcd: "user name not found"},
	}
	for _, c := range cases {
		t.Run(c.cn, func(t *testing.T) {
			certPEM, keyPEM := clientCA.clientCert(t, c.cn, "EC", nil)
			target := tc.target()
			target.Creds = Credentials{CA: tc.CA.CertPEM(), Cert: certPEM, Key: keyPEM}
			h, err := CheckCluster(context.Background(), target)
			if len(c.want) == 0 {
				if err != nil || h.Source == nil {
					t.Fatalf("CheckCluster as root = %v, %v; want a source", h, err)
				}
				return
			}
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("CheckCluster as %s = %v, want FailedPrecondition", c.cn, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q: %v", w, err)
				}
			}
			if class, complete := healthOutcome(err); class != failAuth || complete {
				t.Errorf("outcome %q complete %v, want auth, incomplete", class, complete)
			}
			// etcd's own answer to the snapshot this user would take.
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			cfg := tc.tlsConfig(t)
			cfg.Certificates = []tls.Certificate{pair}
			cli, err := clientv3.New(clientv3.Config{Endpoints: tc.ClientURLs[:1], TLS: cfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			rc, err := cli.Snapshot(ctx)
			if err == nil {
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
			if err == nil || !strings.Contains(err.Error(), c.etcd) {
				t.Errorf("etcd's answer to a Snapshot by %s: %v, want %q", c.cn, err, c.etcd)
			}
		})
	}
}
