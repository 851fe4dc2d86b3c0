package driver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Credentials are the PEM-encoded CA bundle, client certificate and client key used for etcd mTLS.
type Credentials struct{ CA, Cert, Key []byte }

// tlsConfig builds the client TLS configuration; server certificates are always verified, against the
// CA bundle when given, else against the system roots. A client certificate etcd would refuse for its
// dates or its usage is refused here, by name, rather than as a handshake alert from every member.
func (c Credentials) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(c.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(c.CA) {
			return nil, healthFailure(failTLS, false, status.Error(codes.InvalidArgument, "etcd CA bundle (ca.crt) holds no PEM certificate"))
		}
		cfg.RootCAs = pool
	}
	switch {
	case len(c.Cert) > 0 && len(c.Key) > 0:
		pair, err := tls.X509KeyPair(c.Cert, c.Key)
		if err != nil {
			// The tls package's messages describe the problem without quoting key material.
			return nil, healthFailure(failTLS, false, status.Errorf(codes.InvalidArgument, "etcd client certificate (tls.crt) and key (tls.key) do not load: %v", err))
		}
		if err := checkClientCert(pair.Leaf, time.Now()); err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	case len(c.Cert) > 0 || len(c.Key) > 0:
		return nil, healthFailure(failTLS, false, status.Error(codes.InvalidArgument, "etcd client certificate (tls.crt) and key (tls.key) must be given together"))
	}
	return cfg, nil
}

// checkClientCert refuses a client certificate that any etcd server refuses (crypto/tls verifies a
// client's chain at the current time and for ExtKeyUsageClientAuth): expired, not yet valid, or meant
// for another use. The message names the certificate by subject, issuer and dates, never its key.
func checkClientCert(leaf *x509.Certificate, now time.Time) error {
	refuse := func(format string, args ...any) error {
		return healthFailure(failTLS, false, status.Errorf(codes.FailedPrecondition, "etcd client certificate (tls.crt) "+format, args...))
	}
	switch {
	case now.After(leaf.NotAfter):
		return refuse("expired %s ago: %s; issue a new one and update the Secret", now.Sub(leaf.NotAfter).Round(time.Second), describeCert(leaf))
	case now.Before(leaf.NotBefore):
		return refuse("is not valid yet (in %s; is a clock wrong?): %s", leaf.NotBefore.Sub(now).Round(time.Second), describeCert(leaf))
	case !forClientAuth(leaf):
		return refuse("is not for client authentication (extended key usage %s; etcd requires clientAuth): %s", extKeyUsages(leaf), describeCert(leaf))
	}
	return nil
}

// forClientAuth reports whether the certificate may authenticate a TLS client; no extended key usage
// at all means any use, as x509.Certificate.Verify reads it.
func forClientAuth(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.ContainsFunc(c.ExtKeyUsage, func(u x509.ExtKeyUsage) bool {
		return u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny
	})
}

// extKeyUsageNames are the names RFC 5280 gives the usages a TLS certificate is likely to carry.
var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageServerAuth:      "serverAuth",
	x509.ExtKeyUsageClientAuth:      "clientAuth",
	x509.ExtKeyUsageCodeSigning:     "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping:    "timeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

// extKeyUsages lists a certificate's extended key usages by name, unknown ones by OID.
func extKeyUsages(c *x509.Certificate) string {
	var names []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := extKeyUsageNames[u]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("#%d", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		names = append(names, oid.String())
	}
	return strings.Join(names, ", ")
}

// describeCert names a certificate for a message: subject, issuer and validity, all public.
func describeCert(c *x509.Certificate) string {
	return fmt.Sprintf("subject %q, issuer %q, valid from %s to %s", c.Subject.String(), c.Issuer.String(),
		c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
}

// describeRefusedClientCert explains a handshake the server ended with an alert about the client's
// certificate: which certificate it was and, when a CA bundle is given, whether it chains to it (a
// client certificate from another CA than the server's is the usual cause).
func describeRefusedClientCert(cfg *tls.Config, required bool) string {
	if len(cfg.Certificates) == 0 || cfg.Certificates[0].Leaf == nil {
		return "the server requires a client certificate and none is configured (tls.crt, tls.key)"
	}
	pair := cfg.Certificates[0]
	msg := "the server refused the client certificate, " + describeCert(pair.Leaf)
	if required {
		// crypto/tls sends a client certificate only if its issuer is among the CAs the server
		// names in its request; otherwise it sends none and the server says a certificate is required.
		msg = "the server accepts client certificates only from CAs it trusts, and the configured one is not signed by any of them, " +
			"so none was sent: " + describeCert(pair.Leaf)
	}
	if cfg.RootCAs == nil {
		return msg
	}
	intermediates := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			intermediates.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{Roots: cfg.RootCAs, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := pair.Leaf.Verify(opts); err != nil {
		msg += fmt.Sprintf("; it does not chain to the CA bundle ca.crt either (%v)", err)
	}
	return msg
}

// isRemoteCertRefusal reports a TLS alert the server sent about the client's certificate (alert texts
// as crypto/tls prints them).
func isRemoteCertRefusal(reason string) bool {
	for _, alert := range []string{"bad certificate", "unknown certificate authority", "expired certificate",
		"unsupported certificate", "certificate required", "revoked certificate", "unknown certificate"} {
		if strings.Contains(reason, "remote error: tls: "+alert) {
			return true
		}
	}
	return false
}
