package testpki

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestIssueVerifiesAgainstCA(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue("member", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(kp.CertPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
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
