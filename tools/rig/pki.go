package rig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// staticUser is an identity in the apiserver's static token file.
type staticUser struct {
	name   string
	groups []string
	token  string
}

// Identities of the control-plane components. The scheduler runs with the bootstrap RBAC of a real
// cluster; the controller-manager runs without per-controller service accounts
// (--use-service-account-credentials=false) and therefore needs to be a cluster admin, as in
// hack/local-up-cluster.sh without that flag.
var staticUsers = []staticUser{
	{name: "rig-admin", groups: []string{"system:masters"}},
	{name: "system:kube-controller-manager", groups: []string{"system:masters"}},
	{name: "system:kube-scheduler"},
	{name: "rig-snapshot-controller", groups: []string{"system:masters"}},
}

// pki holds the control plane's credentials and their files under <root>/pki.
type pki struct {
	dir         string
	caFile      string // CA of the apiserver's serving certificate
	caPEM       []byte
	servingCert string
	servingKey  string
	saKey       string // service-account signing key (private; the apiserver derives the public key)
	tokenFile   string
	tokens      map[string]string // user name -> bearer token
}

// newPKI writes a serving CA and certificate for the apiserver (loopback and in-cluster names), a
// service-account signing key and the static token file.
func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		dir:         dir,
		caFile:      filepath.Join(dir, "ca.crt"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "service-account.key"),
		tokenFile:   filepath.Join(dir, "tokens.csv"),
		tokens:      map[string]string{},
	}
	ca, err := testpki.NewCA("rig-apiserver-ca")
	if err != nil {
		return nil, err
	}
	p.caPEM = ca.CertPEM()
	if err := ca.WriteCertFile(p.caFile); err != nil {
		return nil, err
	}
	kp, err := ca.Issue("kube-apiserver", "127.0.0.1", "localhost", serviceIP,
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
	if err != nil {
		return nil, err
	}
	if err := kp.WriteFiles(p.servingCert, p.servingKey); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.saKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	var csv strings.Builder
	for i, u := range staticUsers {
		tok := randomHex(24)
		p.tokens[u.name] = tok
		// token,user,uid,"group1,group2"
		fmt.Fprintf(&csv, "%s,%s,rig-uid-%d,\"%s\"\n", tok, u.name, i, strings.Join(u.groups, ","))
	}
	if err := os.WriteFile(p.tokenFile, []byte(csv.String()), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

// writeKubeconfig writes a kubeconfig for server that trusts the rig's CA and sends token.
func writeKubeconfig(path, server string, caPEM []byte, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["rig"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["rig"] = &clientcmdapi.Context{Cluster: "rig", AuthInfo: user}
	cfg.CurrentContext = "rig"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("rig: write kubeconfig %s: %w", path, err)
	}
	return os.Chmod(path, 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("rig: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b)
}
