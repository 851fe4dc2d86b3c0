package driver

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
)

// restoreCheckPause is the pause between health checks while the restored cluster comes up.
const restoreCheckPause = 2 * time.Second

// RestoreCheck is what the driver's own health check found in the restored cluster.
type RestoreCheck struct {
	Endpoints []string
	Leader    string
	Healthy   int
	Voters    int
	// Revision is the cluster's revision after the restore; Keys its live key count.
	Revision int64
	Keys     int64
	// WantRevision is the least revision the restore must show (snapshot revision + bump).
	WantRevision int64
	WantKeys     int64
}

// checkRestoredCluster waits until the restored cluster is healthy (quorum, an agreed leader, no
// alarm) and compares its revision and key count with the snapshot's record.
func checkRestoredCluster(ctx context.Context, cfg RestoreConfig, p *restorePlan, progress func(string, ...any)) (*RestoreCheck, error) {
	target, err := restoreCheckTarget(ctx, cfg, p)
	if err != nil {
		return nil, fmt.Errorf("checking the restored cluster: %w", err)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultRestoreCheckTimeout
	}
	check := &RestoreCheck{Endpoints: target.Endpoints, WantRevision: p.Record.Revision + p.BumpRevision, WantKeys: p.Record.Keys}
	progress("checking the restored cluster at %s", strings.Join(target.Endpoints, ","))
	var last error
	// Each check runs on the caller's ctx, not the poll's, so the last one is not cut short by the
	// timeout and its own error is what the message reports.
	err = wait.PollUntilContextTimeout(ctx, restoreCheckPause, timeout, true, func(context.Context) (bool, error) {
		last = check.run(ctx, target)
		return last == nil, nil
	})
	if err != nil {
		return check, fmt.Errorf("the restored cluster did not pass the check within %s: %v", timeout, last)
	}
	progress("cluster healthy: %d of %d voters, leader %s, revision %d (>= %d), %d keys (snapshot: %d)",
		check.Healthy, check.Voters, check.Leader, check.Revision, check.WantRevision, check.Keys, check.WantKeys)
	if check.Revision < check.WantRevision {
		return check, fmt.Errorf("the restored cluster is at revision %d, below the snapshot's %d plus the bump %d", check.Revision, p.Record.Revision, p.BumpRevision)
	}
	if check.Keys != check.WantKeys {
		return check, fmt.Errorf("the restored cluster holds %d keys, the snapshot %d", check.Keys, check.WantKeys)
	}
	return check, nil
}

// run does one health check and, when it passes, reads the revision and the key count.
func (c *RestoreCheck) run(ctx context.Context, target ClusterTarget) error {
	h, err := CheckCluster(ctx, target)
	if err != nil {
		return err
	}
	c.Healthy, c.Voters = h.HealthyVoters, h.Voters
	for _, m := range h.Members {
		if m.ID == h.LeaderID {
			c.Leader = m.Name
		}
	}
	ch, err := newChecker(target)
	if err != nil {
		return err
	}
	defer ch.Close()
	ctx, cancel := context.WithTimeout(ctx, target.Timeout)
	defer cancel()
	resp, err := ch.cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("counting keys: %v", err)
	}
	c.Revision, c.Keys = resp.Header.Revision, resp.Count
	return nil
}

// restoreCheckTarget finds how to reach the restored cluster: -endpoints, else (in place) the
// recorded members' client URLs, else the new cluster's client Service; credentials from the flags,
// else -credentials-secret, else the Secret the snapshot's class names.
func restoreCheckTarget(ctx context.Context, cfg RestoreConfig, p *restorePlan) (ClusterTarget, error) {
	t := ClusterTarget{Endpoints: cfg.Endpoints, Timeout: DefaultHealthTimeout}
	if len(t.Endpoints) == 0 && p.InPlace {
		for _, m := range voters(p.Record) {
			t.Endpoints = append(t.Endpoints, m.ClientURLs...)
		}
	}
	if len(t.Endpoints) == 0 {
		sel := labels.Set{cfg.ClusterLabel: p.NewCluster}.String()
		svcs, err := cfg.Kube.CoreV1().Services(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return t, fmt.Errorf("listing Services %s in namespace %s: %w", sel, p.Namespace, err)
		}
		for i := range svcs.Items {
			if hasClientPort(&svcs.Items[i]) || len(t.Endpoints) == 0 {
				t.Endpoints = []string{serviceURL(&svcs.Items[i], "https")}
			}
		}
		if len(t.Endpoints) == 0 {
			return t, fmt.Errorf("no client endpoint: set -endpoints, or label the new cluster's client Service %s", sel)
		}
	}
	switch {
	case cfg.Creds != nil:
		t.Creds = *cfg.Creds
	default:
		ref := cfg.CredentialsSecret
		if ref == "" {
			ref = p.Source.ClassSecret
		}
		if ref == "" {
			return t, fmt.Errorf("no client credentials: set -etcd-ca, -etcd-cert and -etcd-key, or -credentials-secret <namespace>/<name>")
		}
		ns, name, err := splitNamespaced("-credentials-secret", ref, p.Namespace)
		if err != nil {
			return t, err
		}
		s, err := cfg.Kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return t, fmt.Errorf("client credentials Secret %s/%s: %w", ns, name, err)
		}
		if t.Creds, err = credentialsFromSecret(s); err != nil {
			return t, err
		}
	}
	return t, nil
}

// credentialsFromSecret reads ca.crt, tls.crt and tls.key; all three must be there.
func credentialsFromSecret(s *corev1.Secret) (Credentials, error) {
	var missing []string
	for _, k := range []string{secretKeyCA, secretKeyCert, secretKeyKey} {
		if len(s.Data[k]) == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return Credentials{}, fmt.Errorf("Secret %s/%s lacks %s; it needs keys %s, %s and %s", s.Namespace, s.Name, strings.Join(missing, ", "), secretKeyCA, secretKeyCert, secretKeyKey)
	}
	return Credentials{CA: s.Data[secretKeyCA], Cert: s.Data[secretKeyCert], Key: s.Data[secretKeyKey]}, nil
}
