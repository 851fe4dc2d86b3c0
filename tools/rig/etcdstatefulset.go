package rig

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/launcher"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// The layout of the etcd container of a rig StatefulSet, as a real etcd StatefulSet has it and as
// restore reads it back from the pod template.
const (
	// EtcdContainerName is the name of the etcd container.
	EtcdContainerName = "etcd"
	// EtcdClaimTemplate is the volumeClaimTemplate (and pod volume) of the member data: PVC i of
	// StatefulSet s is <EtcdClaimTemplate>-<s>-<i>.
	EtcdClaimTemplate = "data"
	// EtcdDataMountPath is where the etcd container mounts the claim.
	EtcdDataMountPath = "/var/lib/etcd"
	// EtcdDataDirInVolume is the data dir's path inside the member's volume.
	EtcdDataDirInVolume = "data"
	// EtcdDataDir is etcd's data dir as the container sees it (its --data-dir or ETCD_DATA_DIR).
	EtcdDataDir = EtcdDataMountPath + "/" + EtcdDataDirInVolume
	// EtcdUID is the runAsUser, runAsGroup and fsGroup of the pods (the distroless "nonroot" user). The
	// pod runner runs every process as the rig's own user; restore reads the numbers from the template.
	EtcdUID = 65532

	tlsMountPath     = "/etc/etcd/tls"
	membersMountPath = "/etc/etcd-rig"
	// The raft timing of the process-managed members (tools/rig/etcdcluster), for the same reason:
	// a machine shared by builds and tests must not see spurious elections.
	stsHeartbeatMs = 200
	stsElectionMs  = 2000
	stsVolumeSize  = "1Gi"
	stsWaitTimeout = 3 * time.Minute
	stsPoll        = 200 * time.Millisecond
)

// EtcdStatefulSetOptions tune PrepareEtcdStatefulSet. The zero value is a 3-member cluster on the
// rig's default StorageClass with --data-dir in the container's arguments.
type EtcdStatefulSetOptions struct {
	// Members is the size of the cluster and the StatefulSet's replicas. Default 3.
	Members int
	// StorageClass of the volumeClaimTemplate. Default StorageClass (rig-hostpath): the rig's
	// provisioner makes CSI PVs of driver hostpath.csi.k8s.io, another driver than this one's.
	StorageClass string
	// DataDirFromEnv gives etcd its data dir as the environment variable ETCD_DATA_DIR instead of the
	// --data-dir argument (both are forms restore must read).
	DataDirFromEnv bool
	// ClaimRetention is the StatefulSet's persistentVolumeClaimRetentionPolicy. Default: unset, which the
	// API server defaults to Retain on deletion and on scale-down; the PVCs then carry no
	// ownerReferences. WhenDeleted=Delete makes the StatefulSet their owner; WhenScaled=Delete makes
	// each pod the owner of its PVC, so scaling to 0 deletes the data.
	ClaimRetention *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy
	// EtcdArgs are extra etcd flags of every member (for example --quota-backend-bytes for a large
	// database), after the rig's own; the launcher refuses the flags it sets itself.
	EtcdArgs []string
}

// EtcdStatefulSet is an etcd cluster run by a real StatefulSet in the rig: the StatefulSet controller
// creates its pods and, from the volumeClaimTemplate "data", its PVCs; the rig's provisioner
// provisions them; the pod runner runs each pod's container, the launcher (LauncherImage), which
// execs etcd as member <name>-<ordinal> on that member's loopback ports.
//
// Objects in its namespace: the StatefulSet <name> and headless Service <name>; the ConfigMap
// <name>-members (the launcher's member table: ports per ordinal and the initial cluster token); the
// Secret <name>-member-tls (ca.crt and <member>.crt/.key of every member); the ExternalName client
// Service <name>-client and the client credentials Secret <name>-client-tls (ca.crt, tls.crt,
// tls.key), both labelled etcd.io/cluster=<name> as for the process-managed clusters.
type EtcdStatefulSet struct {
	r            *Rig
	name         string
	namespace    string
	members      int
	storageClass string
	dataDirEnv   bool
	retention    *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy
	etcdArgs     []string
	table        launcher.Table

	ca, clientCert, clientKey []byte
	memberTLS                 map[string][]byte
	tlsConfig                 *tls.Config

	undo []func(context.Context) error // deletes what PrepareEtcdStatefulSet created, for its failure paths
}

// StartEtcdStatefulSet prepares (PrepareEtcdStatefulSet) and starts (Start) a members-strong etcd
// StatefulSet name in namespace and returns once every pod is Running and Ready, every PVC Bound, and
// the cluster answers a linearizable write through TLS. On error what it created is deleted.
func (r *Rig) StartEtcdStatefulSet(ctx context.Context, name, namespace string, members int) (*EtcdStatefulSet, error) {
	s, err := r.PrepareEtcdStatefulSet(ctx, name, namespace, EtcdStatefulSetOptions{Members: members})
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, s.rollback(ctx, err)
	}
	return s, nil
}

// rollback undoes, newest first, what PrepareEtcdStatefulSet created, and returns cause with any
// failure to do so. Objects that existed before are never touched.
func (s *EtcdStatefulSet) rollback(ctx context.Context, cause error) error {
	return undoAll(ctx, s.undo, cause)
}

// undoAll runs undo newest first with a fresh context (ctx may be what failed).
func undoAll(ctx context.Context, undo []func(context.Context) error, cause error) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stsWaitTimeout)
	defer cancel()
	var errs []error
	for i := len(undo) - 1; i >= 0; i-- {
		if err := undo[i](dctx); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (and cleaning up: %v)", cause, errors.Join(errs...))
	}
	return cause
}

// PrepareEtcdStatefulSet creates everything of the cluster but the StatefulSet itself: the namespace
// if missing, certificates, the member table, the Services and Secrets. Member names, client and peer
// URLs are fixed from here on, so a test can restore a snapshot into new PVCs named ClaimName(i) for
// this cluster before Start creates the StatefulSet that adopts them. On error what it created is
// deleted; an object that exists already is an error.
func (r *Rig) PrepareEtcdStatefulSet(ctx context.Context, name, namespace string, opts EtcdStatefulSetOptions) (*EtcdStatefulSet, error) {
	if opts.Members == 0 {
		opts.Members = 3
	}
	if opts.Members < 0 {
		return nil, fmt.Errorf("rig: etcd StatefulSet %q: members must be at least 1, got %d", name, opts.Members)
	}
	// The controller-revision-hash label is <name>-<hash of up to 10 characters>, a label value of at most 63.
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 || len(name) > 52 {
		return nil, fmt.Errorf("rig: etcd StatefulSet name %q: must be a DNS label of at most 52 characters %v", name, errs)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return nil, fmt.Errorf("rig: etcd StatefulSet namespace %q: %v", namespace, errs)
	}
	if r.LauncherBinDir == "" {
		return nil, errors.New("rig: the etcd launcher image is not installed")
	}
	if opts.StorageClass == "" {
		opts.StorageClass = r.StorageClass
	}
	s := &EtcdStatefulSet{
		r: r, name: name, namespace: namespace, members: opts.Members,
		storageClass: opts.StorageClass, dataDirEnv: opts.DataDirFromEnv, retention: opts.ClaimRetention,
		etcdArgs:  append([]string(nil), opts.EtcdArgs...),
		memberTLS: map[string][]byte{},
	}
	s.table = launcher.Table{StatefulSet: name, Token: name + "-" + randomHex(8)}
	for i := range opts.Members {
		client, err := stablePort()
		if err != nil {
			return nil, err
		}
		peer, err := stablePort()
		if err != nil {
			return nil, err
		}
		s.table.Members = append(s.table.Members, launcher.Member{Ordinal: i, ClientPort: client, PeerPort: peer})
	}
	if err := s.issueCredentials(); err != nil {
		return nil, err
	}
	if err := s.createObjects(ctx); err != nil {
		return nil, s.rollback(ctx, err)
	}
	return s, nil
}

// issueCredentials makes the cluster's CA, a certificate per member for its loopback URLs (serving
// and peer client), and the client certificate of the credentials Secret.
func (s *EtcdStatefulSet) issueCredentials() error {
	ca, err := testpki.NewCA("etcd-" + s.name + "-ca")
	if err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	s.ca = ca.CertPEM()
	s.memberTLS["ca.crt"] = s.ca
	for i := range s.members {
		kp, err := ca.Issue(s.MemberName(i), "127.0.0.1", "localhost")
		if err != nil {
			return fmt.Errorf("rig: %w", err)
		}
		s.memberTLS[s.MemberName(i)+".crt"] = kp.CertPEM
		s.memberTLS[s.MemberName(i)+".key"] = kp.KeyPEM
	}
	client, err := ca.Issue(s.name + "-client")
	if err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	s.clientCert, s.clientKey = client.CertPEM, client.KeyPEM
	if s.tlsConfig, err = ca.ClientTLS(client); err != nil {
		return fmt.Errorf("rig: client certificate: %w", err)
	}
	return nil
}

func (s *EtcdStatefulSet) clusterLabels() map[string]string {
	return map[string]string{ClusterLabel: s.name}
}

// appLabels mark the objects that are not the cluster's PVCs or client Service: the driver finds the
// client Service by the cluster label, so the headless Service must not carry it.
func (s *EtcdStatefulSet) appLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": s.name}
}

func (s *EtcdStatefulSet) createObjects(ctx context.Context) error {
	kube := s.r.Kube
	ns := s.namespace
	_, err := kube.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	switch {
	case err == nil:
		s.undo = append(s.undo, func(ctx context.Context) error {
			return kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		})
	case !apierrors.IsAlreadyExists(err):
		return fmt.Errorf("rig: namespace %s: %w", ns, err)
	}
	table, err := json.MarshalIndent(s.table, "", "  ")
	if err != nil {
		return err
	}
	objects := []struct {
		what   string
		create func() error
		remove func(context.Context) error
	}{
		{"ConfigMap " + s.membersConfigMap(), func() error {
			_, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, &v1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: s.membersConfigMap(), Labels: s.appLabels()},
				Data:       map[string]string{launcher.TableKey: string(table)},
			}, metav1.CreateOptions{})
			return err
		}, func(ctx context.Context) error {
			return kube.CoreV1().ConfigMaps(ns).Delete(ctx, s.membersConfigMap(), metav1.DeleteOptions{})
		}},
		{"Secret " + s.memberSecret(), func() error {
			_, err := kube.CoreV1().Secrets(ns).Create(ctx, &v1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: s.memberSecret(), Labels: s.appLabels()},
				Type:       v1.SecretTypeOpaque,
				Data:       s.memberTLS,
			}, metav1.CreateOptions{})
			return err
		}, func(ctx context.Context) error {
			return kube.CoreV1().Secrets(ns).Delete(ctx, s.memberSecret(), metav1.DeleteOptions{})
		}},
		{"Secret " + s.SecretName(), func() error {
			_, err := kube.CoreV1().Secrets(ns).Create(ctx, &v1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: s.SecretName(), Labels: s.clusterLabels()},
				Type:       v1.SecretTypeOpaque,
				Data:       map[string][]byte{"ca.crt": s.ca, "tls.crt": s.clientCert, "tls.key": s.clientKey},
			}, metav1.CreateOptions{})
			return err
		}, func(ctx context.Context) error {
			return kube.CoreV1().Secrets(ns).Delete(ctx, s.SecretName(), metav1.DeleteOptions{})
		}},
		{"Service " + s.ServiceName(), func() error {
			// Endpoints refuse loopback addresses, hence ExternalName=localhost; the port is member 0's.
			_, err := kube.CoreV1().Services(ns).Create(ctx, &v1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: s.ServiceName(), Labels: s.clusterLabels()},
				Spec: v1.ServiceSpec{
					Type:         v1.ServiceTypeExternalName,
					ExternalName: "localhost",
					Ports:        []v1.ServicePort{{Name: "client", Port: int32(s.table.Members[0].ClientPort), Protocol: v1.ProtocolTCP}},
				},
			}, metav1.CreateOptions{})
			return err
		}, func(ctx context.Context) error {
			return kube.CoreV1().Services(ns).Delete(ctx, s.ServiceName(), metav1.DeleteOptions{})
		}},
		{"Service " + s.name, func() error {
			// The StatefulSet's governing Service, as in a real cluster; nothing resolves it in the rig.
			_, err := kube.CoreV1().Services(ns).Create(ctx, &v1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: s.name, Labels: s.appLabels()},
				Spec: v1.ServiceSpec{
					ClusterIP:                v1.ClusterIPNone,
					Selector:                 s.clusterLabels(),
					PublishNotReadyAddresses: true,
					Ports: []v1.ServicePort{
						{Name: "client", Port: 2379, Protocol: v1.ProtocolTCP},
						{Name: "peer", Port: 2380, Protocol: v1.ProtocolTCP},
					},
				},
			}, metav1.CreateOptions{})
			return err
		}, func(ctx context.Context) error {
			return kube.CoreV1().Services(ns).Delete(ctx, s.name, metav1.DeleteOptions{})
		}},
	}
	for _, o := range objects {
		if err := o.create(); err != nil {
			return fmt.Errorf("rig: etcd StatefulSet %s/%s: create %s: %w", ns, s.name, o.what, err)
		}
		s.undo = append(s.undo, o.remove)
	}
	return nil
}

func (s *EtcdStatefulSet) membersConfigMap() string { return s.name + "-members" }
func (s *EtcdStatefulSet) memberSecret() string     { return s.name + "-member-tls" }

// statefulSet is the StatefulSet object Start creates.
func (s *EtcdStatefulSet) statefulSet() *appsv1.StatefulSet {
	args := []string{
		"--launcher-members=" + membersMountPath + "/" + launcher.TableKey,
		"--launcher-tls-dir=" + tlsMountPath,
	}
	env := []v1.EnvVar{{Name: "POD_NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}
	if s.dataDirEnv {
		env = append(env, v1.EnvVar{Name: "ETCD_DATA_DIR", Value: EtcdDataDir})
	} else {
		args = append(args, "--data-dir="+EtcdDataDir)
	}
	args = append(args,
		"--heartbeat-interval="+strconv.Itoa(stsHeartbeatMs),
		"--election-timeout="+strconv.Itoa(stsElectionMs),
	)
	args = append(args, s.etcdArgs...)
	podLabels := s.clusterLabels()
	for k, v := range s.appLabels() {
		podLabels[k] = v
	}
	size := resource.MustParse(stsVolumeSize)
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.namespace, Labels: s.appLabels()},
		Spec: appsv1.StatefulSetSpec{
			Replicas:                             ptr.To(int32(s.members)),
			ServiceName:                          s.name,
			PodManagementPolicy:                  appsv1.ParallelPodManagement,
			PersistentVolumeClaimRetentionPolicy: s.retention,
			Selector:                             &metav1.LabelSelector{MatchLabels: s.clusterLabels()},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: v1.PodSpec{
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					SecurityContext: &v1.PodSecurityContext{
						RunAsUser:    ptr.To[int64](EtcdUID),
						RunAsGroup:   ptr.To[int64](EtcdUID),
						FSGroup:      ptr.To[int64](EtcdUID),
						RunAsNonRoot: ptr.To(true),
						// The rig's etcd namespace enforces the "restricted" Pod Security Standard.
						SeccompProfile: &v1.SeccompProfile{Type: v1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []v1.Container{{
						Name:    EtcdContainerName,
						Image:   s.r.LauncherImage,
						Command: []string{LauncherBinary},
						Args:    args,
						Env:     env,
						VolumeMounts: []v1.VolumeMount{
							{Name: EtcdClaimTemplate, MountPath: EtcdDataMountPath},
							{Name: "tls", MountPath: tlsMountPath, ReadOnly: true},
							{Name: "members", MountPath: membersMountPath, ReadOnly: true},
						},
						Resources: v1.ResourceRequirements{Requests: v1.ResourceList{
							v1.ResourceCPU:    resource.MustParse("50m"),
							v1.ResourceMemory: resource.MustParse("64Mi"),
						}},
						TerminationMessagePolicy: v1.TerminationMessageFallbackToLogsOnError,
						SecurityContext: &v1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &v1.Capabilities{Drop: []v1.Capability{"ALL"}},
						},
					}},
					Volumes: []v1.Volume{
						{Name: "tls", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: s.memberSecret(), DefaultMode: ptr.To[int32](0o400)}}},
						{Name: "members", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: s.membersConfigMap()}}}},
					},
				},
			},
			VolumeClaimTemplates: []v1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: EtcdClaimTemplate, Labels: s.clusterLabels()},
				Spec: v1.PersistentVolumeClaimSpec{
					AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
					StorageClassName: ptr.To(s.storageClass),
					VolumeMode:       ptr.To(v1.PersistentVolumeFilesystem),
					Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: size}},
				},
			}},
		},
	}
}

// Start creates the StatefulSet and waits as StartEtcdStatefulSet does. PVCs named ClaimName(i) that
// exist already (a restore into a new cluster made them) are adopted by the StatefulSet controller.
// On error the StatefulSet and the PVCs it made are deleted; PVCs that existed before are kept.
func (s *EtcdStatefulSet) Start(ctx context.Context) error {
	begin := time.Now()
	kube := s.r.Kube
	existed := map[string]bool{}
	for i := range s.members {
		_, err := kube.CoreV1().PersistentVolumeClaims(s.namespace).Get(ctx, s.ClaimName(i), metav1.GetOptions{})
		switch {
		case err == nil:
			existed[s.ClaimName(i)] = true
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("rig: PVC %s/%s: %w", s.namespace, s.ClaimName(i), err)
		}
	}
	if _, err := kube.AppsV1().StatefulSets(s.namespace).Create(ctx, s.statefulSet(), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("rig: create StatefulSet %s/%s: %w", s.namespace, s.name, err)
	}
	if err := s.WaitReady(ctx); err != nil {
		return undoAll(ctx, []func(context.Context) error{func(ctx context.Context) error {
			err := kube.AppsV1().StatefulSets(s.namespace).Delete(ctx, s.name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
			if err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			if err := s.WaitPodsGone(ctx); err != nil {
				return err
			}
			var made []string
			for i := range s.members {
				if !existed[s.ClaimName(i)] {
					made = append(made, s.ClaimName(i))
				}
			}
			return s.deleteClaims(ctx, made)
		}}, err)
	}
	s.r.logf("rig: etcd StatefulSet %s/%s (%d members) up in %s", s.namespace, s.name, s.members, time.Since(begin).Round(100*time.Millisecond))
	return nil
}

// ScaleAndWait sets the StatefulSet's replicas through its scale subresource, as `kubectl scale`
// does, and waits: for 0, until every pod is gone (the pod runner deletes a pod only once its
// processes have exited); otherwise until WaitReady passes for that many members.
func (s *EtcdStatefulSet) ScaleAndWait(ctx context.Context, replicas int) error {
	if replicas < 0 || replicas > s.members {
		return fmt.Errorf("rig: scale %s/%s to %d: the member table has %d members", s.namespace, s.name, replicas, s.members)
	}
	sets := s.r.Kube.AppsV1().StatefulSets(s.namespace)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale, err := sets.GetScale(ctx, s.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		scale.Spec.Replicas = int32(replicas)
		_, err = sets.UpdateScale(ctx, s.name, scale, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("rig: scale StatefulSet %s/%s to %d: %w", s.namespace, s.name, replicas, err)
	}
	if replicas == 0 {
		return s.WaitPodsGone(ctx)
	}
	return s.waitReplicas(ctx, replicas)
}

// WaitPodsGone waits until no pod of the StatefulSet exists.
func (s *EtcdStatefulSet) WaitPodsGone(ctx context.Context) error {
	var left []string
	err := wait.PollUntilContextTimeout(ctx, stsPoll, stsWaitTimeout, true, func(ctx context.Context) (bool, error) {
		pods, err := s.r.Kube.CoreV1().Pods(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: s.Selector()})
		if err != nil {
			return false, nil
		}
		left = left[:0]
		for _, p := range pods.Items {
			left = append(left, p.Name)
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("rig: pods of StatefulSet %s/%s not gone: %v left: %w", s.namespace, s.name, left, err)
	}
	return nil
}

// WaitReady waits until the StatefulSet runs all its members: every pod Running and Ready, every PVC
// Bound, the StatefulSet's status caught up, and a linearizable write through TLS accepted.
func (s *EtcdStatefulSet) WaitReady(ctx context.Context) error { return s.waitReplicas(ctx, s.members) }

func (s *EtcdStatefulSet) waitReplicas(ctx context.Context, n int) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, stsPoll, stsWaitTimeout, true, func(ctx context.Context) (bool, error) {
		last = s.checkReplicas(ctx, n)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("rig: etcd StatefulSet %s/%s: %d members not ready: %v (%w)%s", s.namespace, s.name, n, last, err, s.podLogTails(ctx))
	}
	// A write needs a quorum of the whole cluster.
	if n <= s.members/2 {
		return nil
	}
	cli, err := s.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	err = wait.PollUntilContextTimeout(ctx, stsPoll, stsWaitTimeout, true, func(ctx context.Context) (bool, error) {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, last = cli.Put(wctx, "/rig/ready", time.Now().Format(time.RFC3339Nano))
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("rig: etcd StatefulSet %s/%s accepts no write: %v (%w)%s", s.namespace, s.name, last, err, s.podLogTails(ctx))
	}
	return nil
}

// checkReplicas explains what keeps n members from being up, or returns nil.
func (s *EtcdStatefulSet) checkReplicas(ctx context.Context, n int) error {
	set, err := s.r.Kube.AppsV1().StatefulSets(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if set.Status.ObservedGeneration < set.Generation || set.Status.ReadyReplicas != int32(n) || set.Status.Replicas != int32(n) {
		return fmt.Errorf("StatefulSet status: %d replicas, %d ready (generation %d observed %d), want %d",
			set.Status.Replicas, set.Status.ReadyReplicas, set.Generation, set.Status.ObservedGeneration, n)
	}
	pods, err := s.r.Kube.CoreV1().Pods(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: s.Selector()})
	if err != nil {
		return err
	}
	ready := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == v1.PodRunning && podReady(&p) {
			ready[p.Name] = true
		}
	}
	for i := range n {
		if !ready[s.MemberName(i)] {
			return fmt.Errorf("pod %s is not Running and Ready", s.MemberName(i))
		}
	}
	if len(pods.Items) != n {
		return fmt.Errorf("%d pods, want %d", len(pods.Items), n)
	}
	for i := range n {
		pvc, err := s.r.Kube.CoreV1().PersistentVolumeClaims(s.namespace).Get(ctx, s.ClaimName(i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pvc.Status.Phase != v1.ClaimBound {
			return fmt.Errorf("PVC %s is %s", pvc.Name, pvc.Status.Phase)
		}
	}
	return nil
}

func podReady(p *v1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.PodReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// podLogTails is the end of each member's etcd log, for errors.
func (s *EtcdStatefulSet) podLogTails(ctx context.Context) string {
	var b strings.Builder
	for i := range s.members {
		path := s.r.PodLogPath(s.namespace, s.MemberName(i), EtcdContainerName)
		fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", path, logTail(path, 10))
	}
	return b.String()
}

// PodLogPath is the file the pod runner writes a container's output to.
func (r *Rig) PodLogPath(namespace, pod, container string) string {
	return filepath.Join(r.Root, "pods", namespace+"_"+pod, container+".log")
}

// Delete removes the StatefulSet and waits for its pods to be gone, then deletes its PVCs and waits
// for them to be gone (their volumes go with them: the class's reclaim policy is Delete), Services, Secrets, ConfigMap and the
// snapshot classes of InstallSnapshotClasses. The namespace stays; so do snapshots, which the caller
// deletes first. Objects already gone are skipped, so Delete also cleans up after a failed start.
func (s *EtcdStatefulSet) Delete(ctx context.Context) error {
	kube := s.r.Kube
	ns := s.namespace
	var errs []error
	note := func(what string, err error) {
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", what, err))
		}
	}
	note("StatefulSet "+s.name, kube.AppsV1().StatefulSets(ns).Delete(ctx, s.name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}))
	if err := s.WaitPodsGone(ctx); err != nil {
		errs = append(errs, err)
	}
	var claims []string
	for i := range s.members {
		claims = append(claims, s.ClaimName(i))
	}
	if err := s.deleteClaims(ctx, claims); err != nil {
		errs = append(errs, err)
	}
	note("Service "+s.ServiceName(), kube.CoreV1().Services(ns).Delete(ctx, s.ServiceName(), metav1.DeleteOptions{}))
	note("Service "+s.name, kube.CoreV1().Services(ns).Delete(ctx, s.name, metav1.DeleteOptions{}))
	note("Secret "+s.SecretName(), kube.CoreV1().Secrets(ns).Delete(ctx, s.SecretName(), metav1.DeleteOptions{}))
	note("Secret "+s.memberSecret(), kube.CoreV1().Secrets(ns).Delete(ctx, s.memberSecret(), metav1.DeleteOptions{}))
	note("ConfigMap "+s.membersConfigMap(), kube.CoreV1().ConfigMaps(ns).Delete(ctx, s.membersConfigMap(), metav1.DeleteOptions{}))
	if err := s.deleteSnapshotClasses(ctx); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("rig: etcd StatefulSet %s/%s: %w", ns, s.name, errors.Join(errs...))
	}
	return nil
}

// deleteClaims deletes the PVCs and waits until they are gone (the protection controller lets them
// go once no pod uses them), so that a cluster of the same name can start afresh.
func (s *EtcdStatefulSet) deleteClaims(ctx context.Context, names []string) error {
	pvcs := s.r.Kube.CoreV1().PersistentVolumeClaims(s.namespace)
	var errs []error
	for _, n := range names {
		if err := pvcs.Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete PVC %s: %w", n, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	var left []string
	err := wait.PollUntilContextTimeout(ctx, stsPoll, stsWaitTimeout, true, func(ctx context.Context) (bool, error) {
		left = left[:0]
		for _, n := range names {
			if _, err := pvcs.Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, n)
			}
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("PVCs %v not gone: %w", left, err)
	}
	return nil
}

// Name is the cluster's name: the StatefulSet's, and the value of its etcd.io/cluster label.
func (s *EtcdStatefulSet) Name() string { return s.name }

// Namespace is where all of the cluster's objects are.
func (s *EtcdStatefulSet) Namespace() string { return s.namespace }

// StatefulSetName is the name of the StatefulSet (the cluster's name).
func (s *EtcdStatefulSet) StatefulSetName() string { return s.name }

// Members is the size of the cluster (the StatefulSet's replicas when it runs in full).
func (s *EtcdStatefulSet) Members() int { return s.members }

// Selector is the label selector of the cluster's pods and PVCs (etcd.io/cluster=<name>).
func (s *EtcdStatefulSet) Selector() string { return ClusterLabel + "=" + s.name }

// ClaimName is the PVC of member i, as the StatefulSet controller names it: data-<name>-<i>.
func (s *EtcdStatefulSet) ClaimName(i int) string {
	return EtcdClaimTemplate + "-" + s.MemberName(i)
}

// MemberName is the etcd name and pod name of member i: <name>-<i>.
func (s *EtcdStatefulSet) MemberName(i int) string { return s.table.Name(i) }

// ServiceName is the ExternalName client Service.
func (s *EtcdStatefulSet) ServiceName() string { return s.name + "-client" }

// SecretName is the Secret holding client credentials (ca.crt, tls.crt, tls.key).
func (s *EtcdStatefulSet) SecretName() string { return s.name + "-client-tls" }

// ClientURLs are the members' client URLs, in ordinal order.
func (s *EtcdStatefulSet) ClientURLs() []string {
	var out []string
	for _, m := range s.table.Members {
		out = append(out, m.ClientURL())
	}
	return out
}

// PeerURLs are the members' peer URLs, in ordinal order.
func (s *EtcdStatefulSet) PeerURLs() []string {
	var out []string
	for _, m := range s.table.Members {
		out = append(out, m.PeerURL())
	}
	return out
}

// InitialCluster is the --initial-cluster value of the members (name=peerURL,...), as a restore needs it.
func (s *EtcdStatefulSet) InitialCluster() string { return s.table.InitialCluster() }

// Creds returns the CA certificate and a client certificate and key, in PEM.
func (s *EtcdStatefulSet) Creds() (ca, cert, key []byte) {
	return clone(s.ca), clone(s.clientCert), clone(s.clientKey)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// Client returns a TLS client of all members; the caller closes it.
func (s *EtcdStatefulSet) Client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.ClientURLs(),
		TLS:         s.tlsConfig.Clone(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("rig: client of etcd StatefulSet %s/%s: %w", s.namespace, s.name, err)
	}
	return cli, nil
}

// HostVolumeDir is the host directory backing PVC i (its PV's CSI volume handle): the member's data
// dir is HostVolumeDir/DataDirInVolume, and what restore keeps beside it is there too.
func (s *EtcdStatefulSet) HostVolumeDir(ctx context.Context, i int) (string, error) {
	pvc, err := s.r.Kube.CoreV1().PersistentVolumeClaims(s.namespace).Get(ctx, s.ClaimName(i), metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("rig: PVC %s/%s: %w", s.namespace, s.ClaimName(i), err)
	}
	if pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("rig: PVC %s/%s is not bound", s.namespace, pvc.Name)
	}
	pv, err := s.r.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("rig: PV %s: %w", pvc.Spec.VolumeName, err)
	}
	if pv.Spec.CSI == nil {
		return "", fmt.Errorf("rig: PV %s is not a CSI volume", pv.Name)
	}
	return pv.Spec.CSI.VolumeHandle, nil
}

// DataDirInVolume is the data dir's path inside the member's volume ("data").
func (s *EtcdStatefulSet) DataDirInVolume() string { return EtcdDataDirInVolume }

// startEtcdUnderTestStatefulSet starts the cluster under test as a StatefulSet (Options.EtcdStatefulSet).
func (r *Rig) startEtcdUnderTestStatefulSet(ctx context.Context) error {
	s, err := r.PrepareEtcdStatefulSet(ctx, EtcdClusterName, r.Namespace, EtcdStatefulSetOptions{Members: r.opts.EtcdMembers, EtcdArgs: r.opts.EtcdArgs})
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		return s.rollback(ctx, err)
	}
	r.EtcdSet = s
	r.logf("rig: etcd cluster %q (%d members) runs as a StatefulSet in namespace %s", EtcdClusterName, r.opts.EtcdMembers, r.Namespace)
	return nil
}

// EtcdClient returns a TLS client of the etcd cluster under test, however it runs; the caller closes it.
func (r *Rig) EtcdClient() (*clientv3.Client, error) {
	if r.EtcdSet != nil {
		return r.EtcdSet.Client()
	}
	if r.Etcd == nil {
		return nil, errors.New("rig: no etcd cluster under test")
	}
	return r.Etcd.Client()
}
