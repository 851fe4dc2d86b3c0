package driver

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// enospcText is how Go, and so etcdctl, prints ENOSPC ("write <file>: no space left on device").
const enospcText = "no space left on device"

// volumeFullReason says in so many words that the snapshot volume was too small when a Job failed
// because a write to it hit ENOSPC, naming the PVC, its size, the database size the chosen member
// reported and the class parameters that size the volume; the original reason follows. Any other
// reason is returned unchanged.
func volumeFullReason(rec *Record, reason string) string {
	if !strings.Contains(reason, enospcText) {
		return reason
	}
	db := "unknown"
	member := ""
	if m := rec.SourceMember; m != nil {
		db = resource.NewQuantity(m.DBSize, resource.BinarySI).String()
		member = fmt.Sprintf(" (as member %s reported it)", m.Name)
	}
	return fmt.Sprintf("the snapshot volume is too small for the database: PVC %s/%s of %s, database %s%s; "+
		"give a larger class parameter %s, or leave it out so the driver sizes the volume from the database: %s",
		rec.Namespace, rec.ID, rec.PVCSize, db, member, paramSnapshotSize, reason)
}
