package driver

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Keys of the CSI snapshotter secret (and of the Secret the Job mounts).
const (
	secretKeyCA   = "ca.crt"
	secretKeyCert = "tls.crt"
	secretKeyKey  = "tls.key"

	clientPortName    = "client"
	defaultClientPort = 2379
)

// clusterTarget works out how to reach the etcd cluster of a request: the endpoints (class parameter,
// else the cluster's client Service) and the client credentials (CSI secrets, else the driver flags).
func (e *Engine) clusterTarget(ctx context.Context, ns, cluster string, p snapshotParams, secrets map[string]string) (ClusterTarget, error) {
	creds, haveCreds, err := e.credentials(secrets)
	if err != nil {
		return ClusterTarget{}, err
	}
	var endpoints []string
	if len(p.Endpoints) > 0 {
		endpoints, err = normalizeEndpoints(p.Endpoints, p.AllowPlaintext)
	} else {
		// Without credentials the only way in is plaintext, and only when the class allows it.
		scheme := "https"
		if !haveCreds && p.AllowPlaintext {
			scheme = "http"
		}
		endpoints, err = e.serviceEndpoints(ctx, ns, cluster, scheme)
	}
	if err != nil {
		return ClusterTarget{}, err
	}
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "https://") && !haveCreds {
			return ClusterTarget{}, status.Errorf(codes.InvalidArgument,
				"no etcd client credentials for %s: the snapshotter secret (class parameters csi.storage.k8s.io/group-snapshotter-secret-name and -namespace) must hold keys %s, %s and %s, or the driver must run with -etcd-ca, -etcd-cert and -etcd-key",
				ep, secretKeyCA, secretKeyCert, secretKeyKey)
		}
	}
	return ClusterTarget{Endpoints: endpoints, Creds: creds, AllowPlaintext: p.AllowPlaintext, Timeout: e.cfg.HealthTimeout}, nil
}

// credentials takes all three keys from the CSI secrets, or falls back to the driver's flags when
// the secrets carry none of them. A partial secret is an error: guessing would hide a typo.
func (e *Engine) credentials(secrets map[string]string) (Credentials, bool, error) {
	var missing, present []string
	for _, k := range []string{secretKeyCA, secretKeyCert, secretKeyKey} {
		if strings.TrimSpace(secrets[k]) == "" {
			missing = append(missing, k)
		} else {
			present = append(present, k)
		}
	}
	switch {
	case len(missing) == 0:
		return Credentials{CA: []byte(secrets[secretKeyCA]), Cert: []byte(secrets[secretKeyCert]), Key: []byte(secrets[secretKeyKey])}, true, nil
	case len(present) > 0:
		return Credentials{}, false, status.Errorf(codes.InvalidArgument, "the snapshotter secret has %s but lacks %s; it needs keys %s, %s and %s",
			strings.Join(present, ", "), strings.Join(missing, ", "), secretKeyCA, secretKeyCert, secretKeyKey)
	case e.cfg.FallbackCreds != nil:
		return *e.cfg.FallbackCreds, true, nil
	}
	return Credentials{}, false, nil
}

// serviceEndpoints finds the client Service labelled <cluster label>=<cluster> in ns. When several
// match, one with a port named "client" wins, then the first by name, so the choice is stable.
func (e *Engine) serviceEndpoints(ctx context.Context, ns, cluster, scheme string) ([]string, error) {
	sel := labels.Set{e.cfg.ClusterLabel: cluster}.String()
	list, err := e.cfg.Kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, kubeStatus(err, "listing Services %s in namespace %s", sel, ns)
	}
	if len(list.Items) == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "no Service labelled %s in namespace %s to reach etcd cluster %q; create one or set the class parameter %s",
			sel, ns, cluster, paramEndpoints)
	}
	svcs := list.Items
	sort.SliceStable(svcs, func(i, j int) bool {
		ci, cj := hasClientPort(&svcs[i]), hasClientPort(&svcs[j])
		if ci != cj {
			return ci
		}
		return svcs[i].Name < svcs[j].Name
	})
	return []string{serviceURL(&svcs[0], scheme)}, nil
}

func hasClientPort(svc *corev1.Service) bool {
	for _, p := range svc.Spec.Ports {
		if p.Name == clientPortName {
			return true
		}
	}
	return false
}

// serviceURL is the client URL of svc: ExternalName services point at their external host, others
// at their cluster DNS name (the search path completes "<svc>.<ns>.svc").
func serviceURL(svc *corev1.Service, scheme string) string {
	host := svc.Name + "." + svc.Namespace + ".svc"
	if svc.Spec.Type == corev1.ServiceTypeExternalName && svc.Spec.ExternalName != "" {
		host = strings.TrimSuffix(svc.Spec.ExternalName, ".")
	}
	port := int32(defaultClientPort)
	for _, p := range svc.Spec.Ports {
		if p.Name == clientPortName {
			port = p.Port
		}
	}
	return fmt.Sprintf("%s://%s", scheme, net.JoinHostPort(host, strconv.Itoa(int(port))))
}

// normalizeEndpoints checks the endpoints class parameter; a bare host:port means https. What an
// endpoint may be is checkEndpoints' rule alone, the health check's, so a class is refused here or
// not at all.
func normalizeEndpoints(in []string, allowPlaintext bool) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, ep := range in {
		if !strings.Contains(ep, "://") {
			ep = "https://" + ep
		}
		out = append(out, ep)
	}
	if err := checkEndpoints(out, allowPlaintext); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "class parameter %s: %s", paramEndpoints, status.Convert(err).Message())
	}
	return out, nil
}

// clientURL picks the URL the Job saves from: https when the driver has credentials and the member
// offers it, plaintext only when the class allows it.
func clientURL(m *MemberStatus, haveCreds, allowPlaintext bool) (string, error) {
	for _, u := range m.ClientURLs {
		if haveCreds && strings.HasPrefix(u, "https://") {
			return u, nil
		}
	}
	for _, u := range m.ClientURLs {
		if allowPlaintext && strings.HasPrefix(u, "http://") {
			return u, nil
		}
	}
	return "", status.Errorf(codes.FailedPrecondition, "etcd member %s (%s) advertises no usable client URL (%s); https needs client credentials, plaintext needs class parameter %s=\"true\"",
		m.Name, memberIDString(m.ID), strings.Join(m.ClientURLs, ", "), paramAllowPlaintext)
}
