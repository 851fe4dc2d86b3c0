package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"
)

// twoCAs is a test CA and another one, which must not be trusted in its place.
func twoCAs(t *testing.T) (ca, other *CA) {
	t.Helper()
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err = NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	return ca, other
}

func TestIssueVerifiesAgainstCA(t *testing.T) {
	ca, other := twoCAs(t)
	kp, err := ca.Issue("member", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, kp)
	cases := []struct {
		name    string
		roots   []byte
		host    string
		wantErr bool
	}{
		{name: "own CA, IP SAN", roots: ca.CertPEM(), host: "127.0.0.1"},
		{name: "own CA, DNS SAN", roots: ca.CertPEM(), host: "localhost"},
		{name: "own CA, host not in SAN", roots: ca.CertPEM(), host: "example.com", wantErr: true},
		{name: "other CA", roots: other.CertPEM(), host: "127.0.0.1", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(tc.roots)
			_, err := cert.Verify(x509.VerifyOptions{
				Roots:     pool,
				DNSName:   tc.host,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Verify() error = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// TestIssueValidityExpired issues a certificate that expired half an hour ago: it chains to its CA, and
// x509 verification at the current time refuses it as expired, as a TLS server would.
func TestIssueValidityExpired(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	// The CA itself is valid from an hour ago.
	notBefore, notAfter := time.Now().Add(-48*time.Hour), time.Now().Add(-30*time.Minute)
	kp, err := ca.IssueValidity("expired-client", notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, kp)
	if !cert.NotAfter.Equal(notAfter.Truncate(time.Second)) || !cert.NotBefore.Equal(notBefore.Truncate(time.Second)) {
		t.Errorf("validity %s..%s, want %s..%s", cert.NotBefore, cert.NotAfter, notBefore, notAfter)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	var invalid x509.CertificateInvalidError
	if _, err := cert.Verify(opts); !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Errorf("Verify now = %v, want an Expired error", err)
	}
	opts.CurrentTime = notAfter.Add(-time.Minute)
	if _, err := cert.Verify(opts); err != nil {
		t.Errorf("Verify within the validity period = %v, want it to chain to its CA", err)
	}
	if _, err := ca.IssueValidity("backwards", notAfter, notBefore); err == nil {
		t.Error("IssueValidity with notAfter before notBefore succeeded")
	}
}

// parseCert is the certificate of kp, which must be one PEM block.
func parseCert(t *testing.T, kp *KeyPair) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(kp.CertPEM)
	if block == nil {
		t.Fatalf("certificate %q is not PEM", kp.CertPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestClientTLS completes a mutual TLS handshake with a server whose certificate ca issued and which
// requires a client certificate of ca; a server of another CA is refused.
func TestClientTLS(t *testing.T) {
	ca, other := twoCAs(t)
	client, err := ca.Issue("client")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.ClientTLS(client)
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(serverCA *CA) error {
		kp, err := serverCA.Issue("server", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		clients := x509.NewCertPool()
		clients.AppendCertsFromPEM(ca.CertPEM())
		l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			if s, err := l.Accept(); err == nil {
				s.(*tls.Conn).Handshake()
				s.Close()
			}
		}()
		c, err := tls.Dial("tcp", l.Addr().String(), cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := handshake(ca); err != nil {
		t.Errorf("handshake with a server of the CA: %v", err)
	}
	if err := handshake(other); err == nil {
		t.Error("handshake with a server of another CA succeeded")
	}
}
