package rig

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
)

// installSnapshotCRDs applies the snapshot and group snapshot CRDs of external-snapshotter's client
// module and waits until they are established.
func (r *Rig) installSnapshotCRDs(ctx context.Context) error {
	files, err := snapshotCRDFiles(ctx, r.repoRoot)
	if err != nil {
		return err
	}
	objs, err := readManifests(files...)
	if err != nil {
		return err
	}
	var names []string
	for _, m := range objs {
		names = append(names, m.obj.GetName())
	}
	if err := r.apply(ctx, objs, ""); err != nil {
		return err
	}
	if err := r.waitEstablished(ctx, names); err != nil {
		return err
	}
	r.mapper.Reset()
	r.logf("rig: snapshot CRDs established (%s)", strings.Join(names, ", "))
	return nil
}

// startSnapshotController starts the upstream snapshot-controller with the group snapshot feature.
// It runs as a cluster admin: its own RBAC is not what the rig tests.
func (r *Rig) startSnapshotController(ctx context.Context) error {
	kc, err := r.componentKubeconfig("snapshot-controller", "rig-snapshot-controller")
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort())
	p := r.newProcess("snapshot-controller", filepath.Join(r.BinDir, "snapshot-controller"),
		"--kubeconfig="+kc,
		"--leader-election=false",
		"--http-endpoint="+addr,
		"--feature-gates=CSIVolumeGroupSnapshot=true",
		// Upstream backs off to 5 minutes between retries; tests wait for transient errors to clear.
		"--retry-interval-max=30s",
		"--kube-api-qps=50",
		"--kube-api-burst=100",
		"--v=4",
	)
	p.args = append(p.args, r.opts.SnapshotControllerArgs...)
	if err := r.launch(p); err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	err = r.waitReady(ctx, p, "snapshot-controller", time.Minute, func(ctx context.Context) error {
		if _, err := httpGet(ctx, hc, "http://"+addr+"/metrics", ""); err != nil {
			return err
		}
		if !p.logSinceStartContains("Starting snapshot controller") {
			return errors.New(`no "Starting snapshot controller" in its log yet`)
		}
		return nil
	})
	if err == nil {
		r.logf("rig: snapshot-controller running")
	}
	return err
}

// applyDriverManifests applies every object of manifests/*.yaml, unchanged, except the Deployment:
// the rig runs the driver and its sidecar as local processes instead, with the Deployment's arguments.
func (r *Rig) applyDriverManifests(ctx context.Context) error {
	dir := filepath.Join(r.repoRoot, "manifests")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		if r.opts.WithoutDriver {
			r.logf("rig: no manifests in %s; nothing applied", dir)
			return nil
		}
		return fmt.Errorf("rig: no *.yaml in %s: the driver's ServiceAccount and RBAC come from there", dir)
	}
	objs, err := readManifests(files...)
	if err != nil {
		return err
	}
	var apply []manifest
	var crds []string
	for _, m := range objs {
		if m.obj.GetKind() == "Deployment" {
			r.deployment = m.obj
			continue
		}
		if m.obj.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, m.obj.GetName())
		}
		apply = append(apply, m)
	}
	if err := r.apply(ctx, apply, DriverNamespace); err != nil {
		return err
	}
	// The driver's own CRDs (EtcdSnapshotSchedule) are served before a test creates their objects.
	if err := r.waitEstablished(ctx, crds); err != nil {
		return err
	}
	if err := r.allowDriverImages(ctx); err != nil {
		return err
	}
	if err := r.waitAdmissionEnforced(ctx); err != nil {
		return err
	}
	r.logf("rig: applied %d objects from manifests/ (%s)", len(apply), strings.Join(baseNames(files), ", "))
	return nil
}

// deploymentArgs returns the args of a container of the manifests' Deployment, or nil.
func (r *Rig) deploymentArgs(container string) []string {
	if r.deployment == nil {
		return nil
	}
	cs, _, _ := unstructured.NestedSlice(r.deployment.Object, "spec", "template", "spec", "containers")
	for _, c := range cs {
		m, _ := c.(map[string]any)
		if m["name"] != container {
			continue
		}
		args, _, _ := unstructured.NestedStringSlice(m, "args")
		return args
	}
	return nil
}

// withoutFlags drops the flags named in drop (with their "=value"; flags given as "-f value" lose
// the following argument too).
func withoutFlags(args []string, drop ...string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		name, hasValue := flagName(args[i])
		if name == "" || !slices.Contains(drop, name) {
			out = append(out, args[i])
			continue
		}
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++
		}
	}
	return out
}

// flagName returns the name of a -flag or --flag argument and whether it carries =value.
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") {
		return "", false
	}
	name := strings.TrimLeft(arg, "-")
	name, _, hasValue := strings.Cut(name, "=")
	return name, hasValue
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if n, _ := flagName(a); n == name {
			return true
		}
	}
	return false
}

// DriverArgs returns the driver's command line as the rig runs it (without the binary).
func (r *Rig) DriverArgs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.driverArgs...)
}

// startDriverAndSidecar starts the driver and the csi-snapshotter, both authenticated as the driver's
// ServiceAccount through a TokenRequest token, so the RBAC of manifests/ is what they get.
func (r *Rig) startDriverAndSidecar(ctx context.Context) error {
	tr, err := r.Kube.CoreV1().ServiceAccounts(DriverNamespace).CreateToken(ctx, DriverServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](48 * 3600)}},
		metav1.CreateOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("rig: manifests/ define no ServiceAccount %s/%s for the driver", DriverNamespace, DriverServiceAccount)
	}
	if err != nil {
		return fmt.Errorf("rig: token for ServiceAccount %s/%s: %w", DriverNamespace, DriverServiceAccount, err)
	}
	kc := filepath.Join(r.Root, "etcd-snapshot-driver.kubeconfig")
	if err := writeKubeconfig(kc, r.APIServerURL, r.pki.caPEM, DriverUser, tr.Status.Token); err != nil {
		return err
	}

	replicas := max(r.opts.DriverReplicas, 1)
	for i := range replicas {
		rep := &driverReplica{index: i, socket: r.CSISocket, httpAddr: "127.0.0.1:" + strconv.Itoa(freePort()), sidecarAddr: "127.0.0.1:" + strconv.Itoa(freePort())}
		if i > 0 {
			rep.socket = filepath.Join(filepath.Dir(r.CSISocket), fmt.Sprintf("csi-%d.sock", i))
		}
		args := r.driverReplicaArgs(kc, rep)
		name := "etcd-snapshot-driver"
		if i > 0 {
			name = fmt.Sprintf("etcd-snapshot-driver-%d", i)
		}
		rep.driver = r.newProcess(name, filepath.Join(r.DriverBinDir, DriverBinary), args...)
		// The Deployment's downward API gives the pod name, the replica's identity in the leader Lease.
		rep.driver.env = []string{"POD_NAME=" + replicaPodName(i)}
		// As its Deployment's pod would be (restartPolicy Always): the driver exits by design when it
		// loses its leader Lease, for example while the apiserver is away. KillDriver and StopDriver
		// still leave it down until StartDriver.
		rep.driver.restart = true
		rep.snapshotter = r.newProcess(strings.Replace(name, "etcd-snapshot-driver", "csi-snapshotter", 1), filepath.Join(r.BinDir, "csi-snapshotter"),
			r.sidecarReplicaArgs(kc, rep, replicas > 1)...)
		rep.snapshotter.restart = true
		r.mu.Lock()
		if i == 0 {
			r.driverArgs = args
			r.DriverHTTPAddress = rep.httpAddr
			r.driver, r.snapshotter, r.sidecarAddr = rep.driver, rep.snapshotter, rep.sidecarAddr
		}
		r.replicas = append(r.replicas, rep)
		r.mu.Unlock()
		if err := r.launch(rep.driver); err != nil {
			return err
		}
		if err := r.waitReplicaReady(ctx, rep); err != nil {
			return err
		}
		if err := r.launch(rep.snapshotter); err != nil {
			return err
		}
		// Only the sidecar holding its Lease starts its controller; the first one gets it.
		if err := r.waitSidecarOf(ctx, rep, i == 0); err != nil {
			return err
		}
	}
	return nil
}

// driverReplicaArgs is the driver's command line for one replica: the Deployment's args with the
// rig's socket, address, credentials, images and short Lease timings.
func (r *Rig) driverReplicaArgs(kc string, rep *driverReplica) []string {
	args := withoutFlags(r.deploymentArgs("etcd-snapshot-driver"),
		"endpoint", "http-address", "kubeconfig", "etcd-image", "driver-image", "v")
	args = append(args,
		"-endpoint=unix://"+rep.socket,
		"-http-address="+rep.httpAddr,
		"-kubeconfig="+kc,
		"-etcd-image="+r.EtcdImage,
		"-driver-image="+r.DriverImage,
		// The shipped Lease timings let a standby wait 15s; a killed rig driver's successor should not.
		"-leader-election-lease-duration="+rigLeaseDuration,
		"-leader-election-renew-deadline="+rigRenewDeadline,
		"-leader-election-retry-period="+rigRetryPeriod,
		"-v=4",
	)
	return append(args, r.opts.DriverArgs...)
}

// sidecarReplicaArgs is the csi-snapshotter's command line for one replica. With several replicas the
// sidecars elect a leader as shipped (--leader-election), with the rig's short Lease timings.
func (r *Rig) sidecarReplicaArgs(kc string, rep *driverReplica, elect bool) []string {
	sargs := withoutFlags(r.deploymentArgs("csi-snapshotter"),
		"csi-address", "kubeconfig", "http-endpoint", "metrics-address", "leader-election", "leader-election-namespace", "v")
	if !hasFlag(sargs, "feature-gates") {
		sargs = append(sargs, "--feature-gates=CSIVolumeGroupSnapshot=true")
	}
	sargs = append(sargs,
		"--csi-address="+rep.socket,
		"--kubeconfig="+kc,
		"--http-endpoint="+rep.sidecarAddr,
		"--v=4",
	)
	if !elect {
		return append(sargs, "--leader-election=false")
	}
	return append(sargs, "--leader-election=true", "--leader-election-namespace="+DriverNamespace,
		"--leader-election-lease-duration="+rigLeaseDuration, "--leader-election-renew-deadline="+rigRenewDeadline,
		"--leader-election-retry-period="+rigRetryPeriod)
}

func (r *Rig) waitDriverReady(ctx context.Context) error {
	return r.waitReplicaReady(ctx, r.replicas[0])
}

func (r *Rig) waitReplicaReady(ctx context.Context, rep *driverReplica) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	err := r.waitReady(ctx, rep.driver, rep.driver.name, time.Minute, func(ctx context.Context) error {
		_, err := httpGet(ctx, hc, "http://"+rep.httpAddr+"/ready", "")
		return err
	})
	if err == nil {
		r.logf("rig: %s ready (http %s, socket %s)", rep.driver.name, rep.httpAddr, rep.socket)
	}
	return err
}

// waitSidecar waits until the csi-snapshotter runs and has connected to the driver and started its
// controller. Like upstream in a pod, the sidecar exits when it notices a lost connection, which gRPC
// only does at its next call after the driver went away; the rig then starts it again (restartDelay).
func (r *Rig) waitSidecar(ctx context.Context) error {
	return r.waitSidecarOf(ctx, r.replicas[0], len(r.replicas) == 1)
}

// waitSidecarOf waits for one replica's csi-snapshotter: serving its HTTP endpoint and, when it is to
// lead, started its controller.
func (r *Rig) waitSidecarOf(ctx context.Context, rep *driverReplica, leading bool) error {
	p := rep.snapshotter
	hc := &http.Client{Timeout: 2 * time.Second}
	err := r.waitReady(ctx, nil, p.name, time.Minute, func(ctx context.Context) error {
		if alive, exit := p.running(); !alive {
			return fmt.Errorf("not running (last exit: %v)", exit)
		}
		if leading && !p.logSinceStartContains("Starting CSI snapshotter") {
			return errors.New(`no "Starting CSI snapshotter" in its log yet`)
		}
		_, err := httpGet(ctx, hc, "http://"+rep.sidecarAddr+"/metrics", "")
		return err
	})
	if err != nil {
		return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, p.logPath, p.logTail())
	}
	r.logf("rig: %s connected to the driver", p.name)
	return nil
}

// StopDriver stops the driver gracefully (SIGTERM, SIGKILL after a grace period). As in a pod, the
// csi-snapshotter exits at its next call to the driver and is started again, then waits for the
// socket to come back.
func (r *Rig) StopDriver() error {
	return r.downDriver(func() { r.driver.stop(stopGrace) })
}

// KillDriver kills the driver with SIGKILL, like a crash or the OOM killer.
func (r *Rig) KillDriver() error {
	return r.downDriver(r.driver.kill)
}

func (r *Rig) downDriver(stop func()) error {
	if r.driver == nil {
		return errors.New("rig: started without the driver")
	}
	stop()
	return nil
}

// StartDriver starts the driver again after StopDriver or KillDriver, with the same flags, socket and
// HTTP address, and waits until it is ready and the csi-snapshotter is running.
func (r *Rig) StartDriver() error {
	if r.driver == nil {
		return errors.New("rig: started without the driver")
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return errors.New("rig: stopped")
	}
	err := r.driver.start()
	r.mu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.life, 2*time.Minute)
	defer cancel()
	if err := r.waitDriverReady(ctx); err != nil {
		return err
	}
	return r.waitSidecar(ctx)
}

// RestartDriverWith stops the driver and starts it again with extra flags after the rig's own (a
// later flag wins), waiting as StartDriver does. With no flags it restores the rig's command line;
// a test that changes the shared rig's driver restores it in its clean-up.
func (r *Rig) RestartDriverWith(extra ...string) error {
	if r.driver == nil {
		return errors.New("rig: started without the driver")
	}
	r.driver.stop(stopGrace)
	r.mu.Lock()
	args := append(append([]string(nil), r.driverArgs...), extra...)
	r.mu.Unlock()
	r.driver.mu.Lock()
	r.driver.args = args
	r.driver.mu.Unlock()
	return r.StartDriver()
}

// DriverRunning reports whether the driver process is alive.
func (r *Rig) DriverRunning() bool {
	if r.driver == nil {
		return false
	}
	alive, _ := r.driver.running()
	return alive
}

// DriverPID is the driver's process id (0 if it never ran).
func (r *Rig) DriverPID() int {
	if r.driver == nil {
		return 0
	}
	return r.driver.pid()
}
