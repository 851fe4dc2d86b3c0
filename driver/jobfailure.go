package driver

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// enospcText is how Go, and so etcdctl, prints ENOSPC ("write <file>: no space left on device").
const enospcText = "no space left on device"

// jobFailureReason is the final error of a failed snapshot Job as the user reads it, from the reason
// jobOutcome gave and the Job's pods. A save cut short by ENOSPC says the snapshot volume is too small,
// naming the PVC, its size, the database size the chosen member reported and the class parameter that
// sizes the volume; any other failure of the save container names the member it saved from, which is
// the one to look at. The original reason follows in both; other failures are returned unchanged.
func jobFailureReason(rec *Record, pods []*corev1.Pod, reason string) string {
	if container, _ := lastPodFailureOf(pods); container != saveContainer {
		return reason
	}
	member, db := "unknown", "unknown"
	if m := rec.SourceMember; m != nil {
		member = fmt.Sprintf("%s (%s)", m.Name, m.Endpoint)
		db = resource.NewQuantity(m.DBSize, resource.BinarySI).String()
	}
	if strings.Contains(reason, enospcText) {
		return fmt.Sprintf("the snapshot volume is too small for the database: PVC %s/%s of %s, database %s as etcd member %s reported it; "+
			"give a larger class parameter %s, or leave it out so the driver sizes the volume from the database: %s",
			rec.Namespace, rec.ID, rec.PVCSize, db, member, paramSnapshotSize, reason)
	}
	return fmt.Sprintf("saving the snapshot from etcd member %s failed: %s", member, reason)
}
