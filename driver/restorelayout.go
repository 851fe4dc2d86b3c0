package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
)

// owningStatefulSet finds the StatefulSet whose pods are the members (<set>-<ordinal>); nil when the
// members do not follow that convention or no such StatefulSet exists.
func owningStatefulSet(ctx context.Context, kube kubernetes.Interface, ns string, ms []plannedMember) (*appsv1.StatefulSet, error) {
	set := ""
	for _, m := range ms {
		s, _, ok := splitOrdinal(m.Name)
		if !ok || (set != "" && s != set) {
			return nil, nil
		}
		set = s
	}
	sts, err := kube.AppsV1().StatefulSets(ns).Get(ctx, set, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("StatefulSet %s/%s: %w", ns, set, err)
	}
	return sts, nil
}

// resolveLayout decides the data dir and the user: flags win, then the StatefulSet's pod template.
func (p *restorePlan) resolveLayout(ctx context.Context, cfg RestoreConfig) error {
	if p.StatefulSet != nil {
		template := cfg.ClaimTemplate
		if template == "" && len(p.Members) > 0 {
			template = strings.TrimSuffix(p.Members[0].PVC, "-"+p.Members[0].Name)
		}
		l, err := layoutFromStatefulSet(p.StatefulSet, template)
		if err != nil && cfg.DataDirInVolume == "" {
			return err
		}
		if err == nil {
			p.Layout = l
		}
	} else {
		p.Layout = memberLayout{UID: nonRootUID, GID: nonRootUID}
		if cfg.DataDirInVolume == "" {
			where := "the snapshot's members are not pods of a StatefulSet in namespace " + p.Namespace
			if !p.InPlace {
				where = fmt.Sprintf("StatefulSet %s/%s does not exist yet", p.Namespace, p.NewCluster)
			}
			return fmt.Errorf("%s, so the data dir inside the PVCs is unknown; set -data-dir-in-volume (and -uid, -gid)", where)
		}
	}
	if cfg.DataDirInVolume != "" {
		p.Layout.DataDir = cfg.DataDirInVolume
	}
	if cfg.UID != nil {
		p.Layout.UID = *cfg.UID
	}
	if cfg.GID != nil {
		p.Layout.GID = *cfg.GID
	}
	return nil
}

// resolveRestoreID picks up an interrupted restore of the same snapshot into the same PVCs (from the
// StatefulSet's annotations or its Jobs) so a rerun finishes it; another restore in progress refuses.
func (p *restorePlan) resolveRestoreID(ctx context.Context, cfg RestoreConfig) error {
	found := sets.New[string]()
	if sts := p.StatefulSet; sts != nil && sts.Annotations[keyRestoreID] != "" {
		rid, source := sts.Annotations[keyRestoreID], sts.Annotations[keyRestoreSource]
		if source != p.Record.ID {
			return fmt.Errorf("StatefulSet %s/%s is held by restore %s of snapshot %s (annotation %s); rerun that restore to finish it, or remove the annotations %s, %s and %s and scale it back by hand",
				sts.Namespace, sts.Name, rid, source, keyRestoreID, keyRestoreID, keyRestoreSource, annotationRestoreReplicas)
		}
		found.Insert(rid)
		if n, err := strconv.Atoi(sts.Annotations[annotationRestoreReplicas]); err == nil {
			p.FormerReplicas = int32(n)
		}
	}
	jobs, err := cfg.Kube.BatchV1().Jobs(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.Set{labelManagedBy: managedByRestore}.String()})
	if err != nil {
		return fmt.Errorf("listing restore Jobs in namespace %s: %w", p.Namespace, err)
	}
	targets := sets.New[string]()
	for _, m := range p.Members {
		targets.Insert(m.PVC)
	}
	for _, j := range jobs.Items {
		if !targets.Has(j.Annotations[annotationRestorePVC]) {
			continue
		}
		if src := j.Labels[keyRestoreSource]; src != p.Record.ID {
			return fmt.Errorf("Job %s/%s of restore %s (snapshot %s) still targets PVC %s; wait for it or delete it (kubectl delete job -n %s -l %s=%s)",
				j.Namespace, j.Name, j.Labels[keyRestoreID], src, j.Annotations[annotationRestorePVC], j.Namespace, keyRestoreID, j.Labels[keyRestoreID])
		}
		found.Insert(j.Labels[keyRestoreID])
	}
	switch {
	case len(found) > 1:
		return fmt.Errorf("several interrupted restores of snapshot %s target these PVCs (%s); delete all but one's Jobs", p.Record.ID, strings.Join(sets.List(found), ", "))
	case len(found) == 1:
		rid := sets.List(found)[0]
		if cfg.RestoreID != "" && cfg.RestoreID != rid {
			return fmt.Errorf("restore %s of the same snapshot was interrupted on these PVCs; rerun with -restore-id %s (or without -restore-id)", rid, rid)
		}
		p.ID, p.Resumed = rid, true
	case cfg.RestoreID != "":
		p.ID = cfg.RestoreID
	default:
		p.ID = newRestoreID()
	}
	return nil
}

// newRestoreID is a fresh, sortable, short id: the UTC time and 16 random bits.
func newRestoreID() string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return strings.ToLower(time.Now().UTC().Format("20060102t150405")) + "-" + hex.EncodeToString(b)
}
