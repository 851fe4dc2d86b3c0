// Package faults holds the end-to-end tests that need a rig unlike the shared one of package e2e: a
// source member killed mid-save needs an etcd StatefulSet (whose pod comes back when killed) and a
// database of hundreds of MiB (a raised --quota-backend-bytes). It is a test binary of its own because
// each test starts a rig of its own (rig.ForTestWithOptions), and two rigs in one process race on
// client-go's global scheme (tools/rig/provisioner/provisioner.go).
package faults
