package driver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// This file mirrors bbolt's on-disk layout: a page walker that reads a bbolt file without bbolt, so
// a damaged snapshot fails verification instead of faulting in bbolt's mmap (see walkBolt). It copies
// no bbolt code, but every constant and offset below restates bbolt's format, and the checks restate
// its Tx.Check. It is fenced: boltMirroredVersion names the bbolt release it mirrors, and
// verifybolt_test.go fails when go.mod links another one (re-read the files below and update both)
// and checks that the walker and bbolt agree on databases bbolt writes.

// boltMirroredVersion is the go.etcd.io/bbolt release whose on-disk layout this file mirrors.
const boltMirroredVersion = "v1.5.0"

// bbolt's on-disk format (go.etcd.io/bbolt internal/common: page.go, meta.go, types.go), little endian
// on every platform etcd supports.
const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltPageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	boltElementSize    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	boltMetaSize       = 64 // magic, version, pageSize, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	boltMetaSumLen     = 56 // the checksum covers the meta up to itself
	boltBucketHeader   = 16 // root u64, sequence u64, then an inline page when root is 0
	boltBranchPage     = 0x01
	boltLeafPage       = 0x02
	boltMetaPage       = 0x04
	boltFreelistPage   = 0x10
	boltBucketLeaf     = 0x01
	boltNoFreelist     = ^uint64(0)
	boltMaxDepth       = 64
	boltDefaultPage    = 4096
)

// boltVisitor receives the content of the top-level buckets in the order bbolt's Tx.ForEach and
// Bucket.ForEach give it: a bucket's name, then each of its keys with its value (nil for a nested
// bucket, as ForEach gives it). Nested buckets are checked but not visited.
type boltVisitor interface {
	bucket(name []byte) error
	entry(key, value []byte) error
}

// walkBolt checks the bbolt database db (the snapshot without its trailer) and feeds its top-level
// buckets to v, in one pass over the pages. It makes the checks of bbolt's Tx.Check (go.etcd.io/bbolt
// tx_check.go: every page in bounds, of branch or leaf type and referenced once; keys strictly
// ascending within a page and within their parent's range; the synced freelist neither double-freeing
// nor freeing a page in use, and every page either in use or free), with bounds checks everywhere, so
// that a truncated or crafted file fails verification instead of faulting in bbolt's mmap: bbolt walks
// pages in goroutines of its own, where a panic cannot be recovered. One walk instead of bbolt's Open,
// Check and ForEach also reads every page once rather than three times.
func walkBolt(db []byte, v boltVisitor) error {
	size := int64(len(db))
	if size < 2*boltDefaultPage {
		return fmt.Errorf("bbolt database too small: %d bytes, less than two pages", size)
	}
	meta, err := readBoltMeta(db)
	if err != nil {
		return err
	}
	w := &boltWalker{db: db, pageSize: uint64(meta.pageSize), hwm: meta.pgid, visit: v}
	if w.pageSize < 512 || w.pageSize > 1<<20 || w.pageSize&(w.pageSize-1) != 0 {
		return fmt.Errorf("bbolt meta page names page size %d", w.pageSize)
	}
	if meta.pgid < 2 || meta.pgid > uint64(size)/w.pageSize {
		return fmt.Errorf("bbolt database truncated: its meta page counts %d pages of %d bytes, the file holds %d bytes", meta.pgid, w.pageSize, size)
	}
	w.used = make([]uint64, (w.hwm+63)/64)
	for id := range uint64(2) {
		// bbolt's check reads both meta pages as pages: each must say who it is and be of one type.
		head := db[id*w.pageSize:]
		if got, flags := binary.LittleEndian.Uint64(head), binary.LittleEndian.Uint16(head[8:]); got != id || !boltOneType(flags) {
			return fmt.Errorf("bbolt database corrupt: meta page %d holds page id %d of type %#x", id, got, flags)
		}
		w.mark(id)
	}
	var free []uint64
	if meta.freelist != boltNoFreelist {
		if free, err = w.freelist(meta.freelist); err != nil {
			return err
		}
	}
	if _, err := w.tree(meta.root, nil, nil, 0, 0); err != nil {
		var ve visitError
		if errors.As(err, &ve) {
			return ve.err
		}
		return fmt.Errorf("bbolt database corrupt: %w", err)
	}
	if meta.freelist == boltNoFreelist {
		// etcd does not sync the freelist: bbolt rebuilds it as every page not in use.
		return nil
	}
	if err := w.checkFree(free); err != nil {
		return fmt.Errorf("bbolt database corrupt: %w", err)
	}
	return nil
}

// boltOneType reports whether page flags name exactly one page type, as bbolt requires of every page.
func boltOneType(flags uint16) bool {
	switch flags {
	case boltBranchPage, boltLeafPage, boltMetaPage, boltFreelistPage:
		return true
	}
	return false
}

// visitError carries an error of the visitor through the walk unchanged: it is about the content
// (the mvcc layer), not the page structure.
type visitError struct{ err error }

func (e visitError) Error() string { return e.err.Error() }

// boltMeta is the part of a meta page the walk needs.
type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readBoltMeta picks the meta page bbolt would: the valid one of the two with the higher txid.
func readBoltMeta(db []byte) (boltMeta, error) {
	m0, err0 := readBoltMetaAt(db, 0)
	offset := int64(boltDefaultPage)
	if err0 == nil {
		offset = int64(m0.pageSize)
	}
	m1, err1 := readBoltMetaAt(db, offset)
	switch {
	case err0 != nil && err1 != nil:
		return boltMeta{}, fmt.Errorf("not a readable bbolt database: %v", err0)
	case err0 != nil:
		return m1, nil
	case err1 != nil || m0.txid >= m1.txid:
		return m0, nil
	}
	return m1, nil
}

func readBoltMetaAt(db []byte, pageOffset int64) (boltMeta, error) {
	at := pageOffset + boltPageHeaderSize
	if pageOffset < 0 || at+boltMetaSize > int64(len(db)) {
		return boltMeta{}, fmt.Errorf("meta page at %d beyond the file", pageOffset)
	}
	b := db[at : at+boltMetaSize]
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(b[:boltMetaSumLen])
	switch {
	case le.Uint32(b[0:]) != boltMagic:
		return boltMeta{}, fmt.Errorf("meta page at %d has no bbolt magic", pageOffset)
	case le.Uint32(b[4:]) != boltVersion:
		return boltMeta{}, fmt.Errorf("meta page at %d has bbolt version %d", pageOffset, le.Uint32(b[4:]))
	case le.Uint64(b[56:]) != h.Sum64():
		return boltMeta{}, fmt.Errorf("meta page at %d fails its checksum", pageOffset)
	}
	return boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]), pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, nil
}

// boltWalker visits every page reachable from the root bucket.
type boltWalker struct {
	db       []byte
	pageSize uint64
	hwm      uint64
	// used has a bit per page below the high water mark: reached by the walk (or a meta page).
	used  []uint64
	visit boltVisitor
}

func (w *boltWalker) mark(id uint64)        { w.used[id/64] |= 1 << (id % 64) }
func (w *boltWalker) isUsed(id uint64) bool { return w.used[id/64]&(1<<(id%64)) != 0 }

// page returns page id with its overflow pages, after checking they lie below the high water mark
// and were not reached before, and marks them reached.
func (w *boltWalker) page(id uint64, flags uint16) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d is outside the database (pages 2..%d)", id, w.hwm-1)
	}
	head := w.db[id*w.pageSize : id*w.pageSize+boltPageHeaderSize]
	le := binary.LittleEndian
	if got := le.Uint64(head); got != id {
		return nil, fmt.Errorf("page %d holds page id %d", id, got)
	}
	if got := le.Uint16(head[8:]); got == 0 || got&^flags != 0 {
		return nil, fmt.Errorf("page %d has type %#x, want %#x", id, got, flags)
	}
	overflow := uint64(le.Uint32(head[12:]))
	if id+overflow >= w.hwm {
		return nil, fmt.Errorf("page %d overflows %d pages past the database end", id, overflow)
	}
	for i := id; i <= id+overflow; i++ {
		if w.isUsed(i) {
			return nil, fmt.Errorf("page %d is referenced twice", i)
		}
		w.mark(i)
	}
	return w.db[id*w.pageSize : (id+1+overflow)*w.pageSize], nil
}

// freelist reads the synced freelist page: its ids must fit the page.
func (w *boltWalker) freelist(id uint64) ([]uint64, error) {
	p, err := w.page(id, boltFreelistPage)
	if err != nil {
		return nil, fmt.Errorf("bbolt freelist: %w", err)
	}
	count, start := uint64(binary.LittleEndian.Uint16(p[10:])), uint64(boltPageHeaderSize)
	if count == 0xFFFF {
		count, start = binary.LittleEndian.Uint64(p[boltPageHeaderSize:]), boltPageHeaderSize+8
	}
	if count > uint64(len(p))/8 || start+count*8 > uint64(len(p)) {
		return nil, fmt.Errorf("bbolt freelist page %d claims %d ids, more than it holds", id, count)
	}
	ids := make([]uint64, count)
	for i := range ids {
		ids[i] = binary.LittleEndian.Uint64(p[start+uint64(i)*8:])
	}
	return ids, nil
}

// checkFree makes bbolt's freelist checks: no page freed twice or both free and in use, and every
// page below the high water mark either in use or free.
func (w *boltWalker) checkFree(ids []uint64) error {
	free := make([]uint64, len(w.used))
	for _, id := range ids {
		switch {
		case id < 2 || id >= w.hwm:
			return fmt.Errorf("freelist names page %d, outside the database (pages 2..%d)", id, w.hwm-1)
		case free[id/64]&(1<<(id%64)) != 0:
			return fmt.Errorf("page %d is freed twice", id)
		case w.isUsed(id):
			return fmt.Errorf("page %d is both in use and free", id)
		}
		free[id/64] |= 1 << (id % 64)
	}
	for id := uint64(2); id < w.hwm; id++ {
		if !w.isUsed(id) && free[id/64]&(1<<(id%64)) == 0 {
			return fmt.Errorf("page %d is neither in use nor free", id)
		}
	}
	return nil
}

// tree walks the pages of a bucket rooted at page id, whose keys must lie in [minKey, maxKey) (nil:
// unbounded), and returns the largest key found. level is the bucket's nesting: 0 for the root
// bucket, whose keys name the top-level buckets, 1 for a top-level bucket.
func (w *boltWalker) tree(id uint64, minKey, maxKey []byte, depth, level int) ([]byte, error) {
	if depth > boltMaxDepth {
		return nil, fmt.Errorf("page %d: the tree is deeper than %d", id, boltMaxDepth)
	}
	p, err := w.page(id, boltBranchPage|boltLeafPage)
	if err != nil {
		return nil, err
	}
	return w.elements(p, id, minKey, maxKey, depth, level)
}

// elements checks every element of page p (a page of the file, or an inline bucket's page), visits
// the entries of top-level buckets and walks on into child pages and buckets, in key order.
func (w *boltWalker) elements(p []byte, id uint64, minKey, maxKey []byte, depth, level int) ([]byte, error) {
	le := binary.LittleEndian
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	if flags != boltBranchPage && flags != boltLeafPage {
		return nil, fmt.Errorf("page %d has type %#x inside a bucket", id, flags)
	}
	if boltPageHeaderSize+count*boltElementSize > len(p) {
		return nil, fmt.Errorf("page %d claims %d elements, more than it holds", id, count)
	}
	// keyAt returns the key of element i, checked to lie inside the page.
	keyAt := func(i int) ([]byte, uint64, error) {
		at := uint64(boltPageHeaderSize + i*boltElementSize)
		e := p[at : at+boltElementSize]
		pos, ksize := uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:]))
		if flags == boltLeafPage {
			pos, ksize = uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:]))
		}
		if at+pos+ksize > uint64(len(p)) {
			return nil, 0, fmt.Errorf("page %d element %d: key beyond the page", id, i)
		}
		return p[at+pos : at+pos+ksize], at + pos + ksize, nil
	}
	previous, largest := minKey, []byte(nil)
	for i := range count {
		key, keyEnd, err := keyAt(i)
		if err != nil {
			return nil, err
		}
		switch {
		case previous != nil && i == 0 && bytes.Compare(previous, key) > 0,
			i > 0 && bytes.Compare(previous, key) >= 0:
			return nil, fmt.Errorf("page %d element %d: keys out of order", id, i)
		case maxKey != nil && bytes.Compare(key, maxKey) >= 0:
			return nil, fmt.Errorf("page %d element %d: key beyond its parent's range", id, i)
		}
		e := p[boltPageHeaderSize+i*boltElementSize:]
		if flags == boltBranchPage {
			next := maxKey
			if i+1 < count {
				if next, _, err = keyAt(i + 1); err != nil {
					return nil, err
				}
			}
			if largest, err = w.tree(le.Uint64(e[8:]), key, next, depth+1, level); err != nil {
				return nil, err
			}
			previous = largest
			continue
		}
		previous, largest = key, key
		eflags, vsize := le.Uint32(e[0:]), uint64(le.Uint32(e[12:]))
		if keyEnd+vsize > uint64(len(p)) {
			return nil, fmt.Errorf("page %d element %d: value beyond the page", id, i)
		}
		value := p[keyEnd : keyEnd+vsize]
		isBucket := eflags&boltBucketLeaf != 0
		if err := w.visitEntry(id, i, level, key, value, isBucket); err != nil {
			return nil, err
		}
		if isBucket {
			if err := w.bucket(value, id, i, depth, level+1); err != nil {
				return nil, err
			}
		}
	}
	return largest, nil
}

// visitEntry hands a leaf element to the visitor: in the root bucket it must be a bucket and names
// one, in a top-level bucket it is one of its entries.
func (w *boltWalker) visitEntry(id uint64, i, level int, key, value []byte, isBucket bool) error {
	var err error
	switch {
	case level == 0 && !isBucket:
		return fmt.Errorf("page %d element %d: the root bucket holds a value, not a bucket", id, i)
	case level == 0:
		err = w.visit.bucket(key)
	case level == 1 && isBucket:
		err = w.visit.entry(key, nil)
	case level == 1:
		err = w.visit.entry(key, value)
	}
	if err != nil {
		return visitError{err}
	}
	return nil
}

// bucket walks the bucket whose header is value (element i of page id), at nesting level.
func (w *boltWalker) bucket(value []byte, id uint64, i, depth, level int) error {
	if len(value) < boltBucketHeader {
		return fmt.Errorf("page %d element %d: bucket header truncated", id, i)
	}
	if root := binary.LittleEndian.Uint64(value); root != 0 {
		_, err := w.tree(root, nil, nil, depth+1, level)
		return err
	}
	inline := value[boltBucketHeader:]
	if len(inline) < boltPageHeaderSize || binary.LittleEndian.Uint16(inline[8:]) != boltLeafPage {
		return fmt.Errorf("page %d element %d: inline bucket is not a leaf page", id, i)
	}
	_, err := w.elements(inline, id, nil, nil, depth+1, level)
	return err
}
