package rig

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// controllers are the kube-controller-manager controllers the flows need: Jobs and their pods,
// StatefulSets (pods and, from volumeClaimTemplates, PVCs of the etcd StatefulSets), the garbage collector (a Job's pods, the Secret owned by a Job), PV binding and the protection
// finalizers on PVCs and PVs (without them a deleted PVC hangs), default service accounts and
// kube-root-ca.crt in new namespaces, namespace deletion, quota usage (quota admission needs it), TTL
// after finished, and aggregated ClusterRoles (admin/edit/view). No node lifecycle controller: the pod
// runner's node is healthy by construction.
var controllers = []string{
	"job-controller",
	"statefulset-controller",
	"garbage-collector-controller",
	"persistentvolume-binder-controller",
	"persistentvolumeclaim-protection-controller",
	"persistentvolume-protection-controller",
	"serviceaccount-controller",
	"root-ca-certificate-publisher-controller",
	"namespace-controller",
	"resourcequota-controller",
	"ttl-after-finished-controller",
	"clusterrole-aggregation-controller",
}

// startAPIServerEtcd starts the single etcd member that stores the apiserver's data. It is throwaway,
// so fsync is off.
func (r *Rig) startAPIServerEtcd(ctx context.Context) error {
	client, peer := freePort(), freePort()
	clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	p := r.newProcess("apiserver-etcd", filepath.Join(r.BinDir, "etcd"),
		"--name=apiserver-etcd",
		"--data-dir="+filepath.Join(r.Root, "apiserver-etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=apiserver-etcd="+peerURL,
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	)
	p.stopTier = 2
	if err := r.launch(p); err != nil {
		return err
	}
	r.etcdURL = clientURL
	hc := &http.Client{Timeout: 2 * time.Second}
	return r.waitReady(ctx, p, "etcd of the apiserver", 30*time.Second, func(ctx context.Context) error {
		body, err := httpGet(ctx, hc, clientURL+"/health", "")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `"health":"true"`) {
			return fmt.Errorf("/health: %s", body)
		}
		return nil
	})
}

// startAPIServer starts kube-apiserver with RBAC, the static tokens, service-account tokens
// (TokenRequest) and the default admission plugins except TaintNodesByCondition: that plugin taints
// new nodes not-ready and relies on the node lifecycle controller, which the rig does not run, to
// remove the taint.
func (r *Rig) startAPIServer(ctx context.Context) error {
	port := freePort()
	r.APIServerURL = "https://127.0.0.1:" + strconv.Itoa(port)
	p := r.newProcess("kube-apiserver", filepath.Join(r.BinDir, "kube-apiserver"),
		"--etcd-servers="+r.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(r.pki.dir, "apiserver"),
		"--tls-cert-file="+r.pki.servingCert,
		"--tls-private-key-file="+r.pki.servingKey,
		"--token-auth-file="+r.pki.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-key-file="+r.pki.saKey,
		"--service-account-signing-key-file="+r.pki.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range="+serviceCIDR,
		// Endpoints refuse loopback addresses, so the "kubernetes" Service gets none.
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=TaintNodesByCondition",
		// As in kubeadm and managed clusters, so that manifests/admission-policy.yaml, not this flag's
		// default, is what refuses a privileged snapshot Job (tools/e2e/admission_test.go).
		"--allow-privileged=true",
		"--v=1",
	)
	p.stopTier = 1
	if err := r.launch(p); err != nil {
		return err
	}
	r.mu.Lock()
	r.apiserver = p
	r.mu.Unlock()
	if err := r.clients(); err != nil {
		return fmt.Errorf("rig: admin client: %w", err)
	}
	r.Kubeconfig = filepath.Join(r.Root, "kubeconfig")
	if err := writeKubeconfig(r.Kubeconfig, r.APIServerURL, r.pki.caPEM, "rig-admin", r.pki.tokens["rig-admin"]); err != nil {
		return err
	}
	if err := r.waitAPIServerReady(ctx, p); err != nil {
		return err
	}
	r.logf("rig: kube-apiserver ready at %s", r.APIServerURL)
	return nil
}

// waitAPIServerReady waits until kube-apiserver answers /readyz.
func (r *Rig) waitAPIServerReady(ctx context.Context, p *process) error {
	return r.waitReady(ctx, p, "kube-apiserver", 3*time.Minute, func(ctx context.Context) error {
		body, err := r.Kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("/readyz: %v %s", err, body)
		}
		return nil
	})
}

// componentKubeconfig writes <Root>/<user-ish name>.kubeconfig for a static user.
func (r *Rig) componentKubeconfig(name, user string) (string, error) {
	path := filepath.Join(r.Root, name+".kubeconfig")
	return path, writeKubeconfig(path, r.APIServerURL, r.pki.caPEM, user, r.pki.tokens[user])
}

func (r *Rig) startControllerManager(ctx context.Context) error {
	kc, err := r.componentKubeconfig("kube-controller-manager", "system:kube-controller-manager")
	if err != nil {
		return err
	}
	return r.startSecureComponent(ctx, "kube-controller-manager", kc,
		"--kubeconfig="+kc,
		"--leader-elect=false",
		"--controllers="+strings.Join(controllers, ","),
		"--root-ca-file="+r.pki.caFile,
		"--pvclaimbinder-sync-period=5s",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
	)
}

func (r *Rig) startScheduler(ctx context.Context) error {
	kc, err := r.componentKubeconfig("kube-scheduler", "system:kube-scheduler")
	if err != nil {
		return err
	}
	config := filepath.Join(r.Root, "kube-scheduler.yaml")
	err = os.WriteFile(config, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 100
  burst: 200
leaderElection:
  leaderElect: false
`, kc)), 0o644)
	if err != nil {
		return err
	}
	return r.startSecureComponent(ctx, "kube-scheduler", kc, "--config="+config)
}

// startSecureComponent starts the control-plane binary name (kube-controller-manager,
// kube-scheduler) with its own flags and those both take alike: kubeconfig kc for delegated
// authentication and authorization, https on a free local port with a self-signed certificate in
// <pki>/<name>, log level 2. It waits for /healthz.
func (r *Rig) startSecureComponent(ctx context.Context, name, kc string, flags ...string) error {
	port := freePort()
	args := append(flags,
		"--authentication-kubeconfig="+kc,
		"--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(r.pki.dir, name),
		"--v=2",
	)
	p := r.newProcess(name, filepath.Join(r.BinDir, name), args...)
	if err := r.launch(p); err != nil {
		return err
	}
	return r.waitHealthz(ctx, p, name, "https://127.0.0.1:"+strconv.Itoa(port)+"/healthz")
}

// waitHealthz waits for a component's self-signed https /healthz to answer ok.
func (r *Rig) waitHealthz(ctx context.Context, p *process, what, url string) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		// The component signs its own serving certificate at start; only liveness is checked here.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	err := r.waitReady(ctx, p, what, 2*time.Minute, func(ctx context.Context) error {
		_, err := httpGet(ctx, hc, url, "")
		return err
	})
	if err == nil {
		r.logf("rig: %s healthy", what)
	}
	return err
}

// waitReady polls check until it passes, the process exits, or timeout; errors name the component and
// carry the tail of its log.
func (r *Rig) waitReady(ctx context.Context, p *process, what string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if p != nil {
			if alive, exit := p.running(); !alive {
				return fmt.Errorf("rig: %s exited during start-up (%v)\n--- last lines of %s ---\n%s", what, exit, p.logPath, p.logTail())
			}
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("rig: %s not ready after %s: %v", what, timeout, last)
			if r.isStopped() {
				msg = fmt.Sprintf("rig: start-up of %s interrupted: the rig is stopping", what)
			}
			if p != nil {
				msg += fmt.Sprintf("\n--- last lines of %s ---\n%s", p.logPath, p.logTail())
			}
			return fmt.Errorf("%s", msg)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// httpGet returns the body of a 200 answer, else an error with the status and body.
func httpGet(ctx context.Context, hc *http.Client, url, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago and that this process has not
// handed out before.
func freePort() int {
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic("rig: no free port on 127.0.0.1: " + err.Error())
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !ports[port] {
			ports[port] = true
			return port
		}
	}
}
