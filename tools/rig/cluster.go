package rig

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/etcdcluster"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/podrunner"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/provisioner"
)

// ClusterLabel is the label that ties an etcd cluster's PVCs and Service together (the driver's
// -cluster-label default).
const ClusterLabel = "etcd.io/cluster"

// Images returns the image names the pod runner knows and the host directories they map to.
func (r *Rig) Images() map[string]string {
	images := map[string]string{r.EtcdImage: r.BinDir}
	if r.DriverBinDir != "" {
		images[r.DriverImage] = r.DriverBinDir
	}
	if r.LauncherBinDir != "" {
		images[r.LauncherImage] = r.LauncherBinDir
	}
	return images
}

// startNodeAndStorage runs the kubelet stand-in and the hostpath provisioner in this process and
// waits for a Ready node and the default StorageClass.
func (r *Rig) startNodeAndStorage(ctx context.Context) error {
	runnerLog, err := os.OpenFile(filepath.Join(r.logDir, "podrunner.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	provLog := r.provLog
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		runnerLog.Close()
		provLog.Close()
		return fmt.Errorf("rig: not starting the pod runner: the rig is stopping")
	}
	r.goInProcess("podrunner", func(ctx context.Context) error {
		defer runnerLog.Close()
		return podrunner.Run(ctx, podrunner.Config{
			Kube:     r.Kube,
			NodeName: NodeName,
			Images:   r.Images(),
			WorkDir:  filepath.Join(r.Root, "pods"),
			Log:      runnerLog,
		})
	})
	r.goInProcess("provisioner", func(ctx context.Context) error {
		defer provLog.Close()
		return r.prov.Run(ctx)
	})
	r.mu.Unlock()

	err = parallel(nil,
		func() error {
			err := r.waitReady(ctx, nil, "pod runner (node "+NodeName+")", time.Minute, func(ctx context.Context) error {
				if err := r.inprocErr("podrunner"); err != nil {
					return fmt.Errorf("pod runner stopped: %w", err)
				}
				node, err := r.Kube.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
				if err != nil {
					return err
				}
				for _, c := range node.Status.Conditions {
					if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
						return nil
					}
				}
				return fmt.Errorf("node %s is not Ready", NodeName)
			})
			if err != nil {
				return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, runnerLog.Name(), logTail(runnerLog.Name(), 25))
			}
			return nil
		},
		func() error {
			err := r.waitReady(ctx, nil, "provisioner (StorageClass "+StorageClass+")", time.Minute, func(ctx context.Context) error {
				if err := r.inprocErr("provisioner"); err != nil {
					return fmt.Errorf("provisioner stopped: %w", err)
				}
				_, err := r.Kube.StorageV1().StorageClasses().Get(ctx, StorageClass, metav1.GetOptions{})
				return err
			})
			if err != nil {
				return fmt.Errorf("%w\n--- last lines of %s ---\n%s", err, provLog.Name(), logTail(provLog.Name(), 25))
			}
			return nil
		},
	)
	if err == nil {
		r.logf("rig: node %s Ready; StorageClass %s served by the provisioner", NodeName, StorageClass)
	}
	return err
}

// buildProvisioner builds the storage stand-in (provisioner.New) while no other goroutine uses a
// typed client; startNodeAndStorage runs it.
func (r *Rig) buildProvisioner() error {
	provLog, err := os.OpenFile(filepath.Join(r.logDir, "provisioner.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	prov, err := provisioner.New(r.life, provisioner.Config{
		Kube: r.Kube,
		Root: filepath.Join(r.Root, "volumes"),
		Log:  provLog,
	})
	if err != nil {
		provLog.Close()
		return err
	}
	r.prov, r.provLog = prov, provLog
	return nil
}

// startEtcdUnderTest starts the etcd cluster under test (its processes only). etcdcluster stops a
// cluster when the context given to Start ends, so it gets the rig's lifetime, not the start-up's.
func (r *Rig) startEtcdUnderTest() error {
	c, err := r.startEtcdCluster(r.life, EtcdClusterName, r.opts.EtcdMembers)
	if err != nil {
		return err
	}
	r.Etcd = c
	return nil
}

func (r *Rig) startEtcdCluster(ctx context.Context, name string, members int) (*etcdcluster.Cluster, error) {
	c, err := etcdcluster.Start(ctx, etcdcluster.Config{
		BinDir:  r.BinDir,
		Dir:     filepath.Join(r.Root, "etcd-"+name),
		Name:    name,
		Members: members,
		LogDir:  r.logDir,
	})
	if err != nil {
		return nil, fmt.Errorf("rig: etcd cluster %q under test: %w", name, err)
	}
	r.mu.Lock()
	stopped := r.stopped
	if !stopped {
		r.clusters = append(r.clusters, c)
	}
	r.mu.Unlock()
	if stopped {
		c.Stop()
		return nil, fmt.Errorf("rig: etcd cluster %q under test: the rig is stopping", name)
	}
	return c, nil
}

// registerEtcdUnderTest registers the cluster under test in Kubernetes and checks it end to end: its
// PVCs bound by the PV controller and a write through its TLS client.
func (r *Rig) registerEtcdUnderTest(ctx context.Context) error {
	if err := r.registerEtcdCluster(ctx, r.Etcd, EtcdClusterName, r.Namespace, r.opts.EtcdMembers); err != nil {
		return err
	}
	r.logf("rig: etcd cluster %q (%d members) registered in namespace %s", EtcdClusterName, r.opts.EtcdMembers, r.Namespace)
	return nil
}

func (r *Rig) registerEtcdCluster(ctx context.Context, c *etcdcluster.Cluster, name, namespace string, members int) error {
	if err := c.Register(ctx, r.Kube, namespace); err != nil {
		return fmt.Errorf("rig: register etcd cluster %q in namespace %s: %w", name, namespace, err)
	}
	if err := r.enforcePodSecurity(ctx, namespace); err != nil {
		return err
	}
	selector := ClusterLabel + "=" + name
	err := r.waitReady(ctx, nil, fmt.Sprintf("PVCs of etcd cluster %q", name), time.Minute, func(ctx context.Context) error {
		pvcs, err := r.Kube.CoreV1().PersistentVolumeClaims(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		bound := 0
		for _, pvc := range pvcs.Items {
			if pvc.Status.Phase == v1.ClaimBound {
				bound++
			}
		}
		if bound != members || len(pvcs.Items) != members {
			return fmt.Errorf("%d of %d PVCs labelled %s in %s are Bound (want %d)", bound, len(pvcs.Items), selector, namespace, members)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cli, err := c.Client()
	if err != nil {
		return fmt.Errorf("rig: client of etcd cluster %q: %w", name, err)
	}
	defer cli.Close()
	return r.waitReady(ctx, nil, fmt.Sprintf("etcd cluster %q", name), time.Minute, func(ctx context.Context) error {
		_, err := cli.Put(ctx, "/rig/ready", time.Now().Format(time.RFC3339Nano))
		return err
	})
}

// StartEtcdCluster starts another etcd cluster (TLS, its own members and ports) and registers it in
// namespace like the cluster under test: PVCs labelled etcd.io/cluster=<name> bound to PVs of the
// rig's storage driver, an ExternalName client Service and the Secret "<name>-client-tls". The
// cluster stops when ctx ends, when its Stop is called, or when the rig stops.
func (r *Rig) StartEtcdCluster(ctx context.Context, name, namespace string, members int) (*etcdcluster.Cluster, error) {
	c, err := r.startEtcdCluster(ctx, name, members)
	if err != nil {
		return nil, err
	}
	if err := r.registerEtcdCluster(ctx, c, name, namespace, members); err != nil {
		return nil, err
	}
	return c, nil
}

// checkAll confirms, once everything is up, that no component died while the others started.
func (r *Rig) checkAll(ctx context.Context) error {
	r.mu.Lock()
	procs := append([]*process(nil), r.procs...)
	r.mu.Unlock()
	for _, p := range procs {
		if alive, exit := p.running(); !alive && !p.restart {
			return fmt.Errorf("rig: %s exited (%v)\n--- last lines of %s ---\n%s", p.name, exit, p.logPath, p.logTail())
		}
	}
	for _, name := range []string{"podrunner", "provisioner"} {
		if err := r.inprocErr(name); err != nil {
			return fmt.Errorf("rig: %s stopped: %w", name, err)
		}
	}
	return ctx.Err()
}
