package driver

import (
	"context"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestValidateVolumeCapabilities checks the Controller RPC the CSI spec requires of every Controller
// plugin: missing fields are INVALID_ARGUMENT, a volume that does not exist is NOT_FOUND, and an
// existing etcd volume (by PV handle or namespace/pvc) is answered without confirming any capability,
// with a message saying why.
func TestValidateVolumeCapabilities(t *testing.T) {
	objs := etcdPVCs(fxNS, fxCluster, 1)
	e := startCSI(t, objs)
	ctx := context.Background()
	rwo := []*csi.VolumeCapability{{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}}

	cases := []struct {
		name     string
		req      *csi.ValidateVolumeCapabilitiesRequest
		code     codes.Code
		contains []string
	}{
		{"no volume id", &csi.ValidateVolumeCapabilitiesRequest{VolumeCapabilities: rwo},
			codes.InvalidArgument, []string{"volume_id"}},
		{"no capabilities", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: pvHandle(fxNS, fxCluster, 0)},
			codes.InvalidArgument, []string{"volume_capabilities"}},
		{"a capability without an access mode", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: pvHandle(fxNS, fxCluster, 0),
			VolumeCapabilities: []*csi.VolumeCapability{{AccessType: rwo[0].AccessType}}},
			codes.InvalidArgument, []string{"volume_capabilities[0]", "access_mode"}},
		{"oversized secrets", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: pvHandle(fxNS, fxCluster, 0), VolumeCapabilities: rwo,
			Secrets: map[string]string{"k": strings.Repeat("x", maxSecretsBytes+1)}},
			codes.InvalidArgument, []string{"secrets"}},
		{"an unknown handle", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "fake-vol-id-0123456789", VolumeCapabilities: rwo},
			codes.NotFound, []string{"fake-vol-id-0123456789"}},
		{"a missing PVC", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: fxNS + "/no-such-pvc", VolumeCapabilities: rwo},
			codes.NotFound, []string{"no-such-pvc"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rsp, err := e.ctrl.ValidateVolumeCapabilities(ctx, tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("ValidateVolumeCapabilities = %v, %v; want code %v", rsp, err, tc.code)
			}
			if msg := status.Convert(err).Message(); !hasAll(msg, tc.contains...) {
				t.Errorf("message %q lacks %q", msg, tc.contains)
			}
		})
	}

	for _, id := range []string{pvHandle(fxNS, fxCluster, 0), fxNS + "/data-main-0"} {
		rsp, err := e.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: rwo})
		if err != nil {
			t.Fatalf("ValidateVolumeCapabilities(%s): %v", id, err)
		}
		if rsp.GetConfirmed() != nil {
			t.Errorf("ValidateVolumeCapabilities(%s) confirmed %v; the driver mounts no volume and can vouch for no capability", id, rsp.GetConfirmed())
		}
		if !hasAll(rsp.GetMessage(), "does not provision", "PVC etcd-test/data-main-0") {
			t.Errorf("ValidateVolumeCapabilities(%s) message %q does not say why nothing is confirmed", id, rsp.GetMessage())
		}
	}
}
