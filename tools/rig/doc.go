// Package rig runs a real Kubernetes control plane, the upstream snapshot controllers, this driver and
// a 3-member TLS etcd cluster under test on the local machine, for end-to-end tests and the playground.
// The cluster under test is process-managed (package etcdcluster), or with Options.EtcdStatefulSet a
// real StatefulSet; StartEtcdStatefulSet starts further StatefulSet clusters beside it.
package rig
