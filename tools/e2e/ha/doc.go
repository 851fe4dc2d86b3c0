// Package ha holds the end-to-end tests of the driver's two replicas. It is a test binary of its own
// because each test starts a rig of its own (rig.ForTestWithOptions), and two rigs in one process race
// on client-go's global scheme (tools/rig/provisioner/provisioner.go).
package ha
