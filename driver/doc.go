// Package driver implements a CSI driver that takes verified etcd snapshots through Kubernetes Jobs.
package driver
