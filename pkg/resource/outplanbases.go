package resource

import (
	"fmt"
	"os"
	"slices"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// basePlan is the folders of load_base/load_bases and cache_from,
// recognised (pkg/baseimage) and named from their files or the entry's
// object form. loadBases loads them.
type basePlan struct {
	baseFolders  []*baseimage.Folder
	cacheFolders []*baseimage.Folder
	// folderParam names each folder's entry for messages, e.g.
	// "params.load_bases[1] (ubuntu)".
	folderParam map[*baseimage.Folder]string
}

func planBases(params *protocol.OutParams, abs func(string) string) (basePlan, error) {
	type entry struct {
		field string
		entry protocol.BaseEntry
	}
	bases := []entry{{"load_base", params.LoadBase}}
	for i, b := range params.LoadBases {
		bases = append(bases, entry{fmt.Sprintf("load_bases[%d]", i), b})
	}
	p := basePlan{folderParam: map[*baseimage.Folder]string{}}
	for _, b := range bases {
		if b.entry.Path == "" {
			continue
		}
		f, err := checkSavedImage(b.field, b.entry, abs(b.entry.Path))
		if err != nil {
			return basePlan{}, err
		}
		p.baseFolders = append(p.baseFolders, f)
		p.folderParam[f] = fmt.Sprintf("params.%s (%s)", b.field, b.entry.Path)
	}
	for i, c := range params.CacheFrom {
		field := fmt.Sprintf("cache_from[%d]", i)
		f, err := checkSavedImage(field, c, abs(c.Path))
		if err != nil {
			return basePlan{}, err
		}
		p.cacheFolders = append(p.cacheFolders, f)
		p.folderParam[f] = fmt.Sprintf("params.%s (%s)", field, c.Path)
	}
	if err := p.checkNames(); err != nil {
		return basePlan{}, err
	}
	return p, nil
}

// checkNames checks the names of the folders whose images are known from
// their files now; the rest once loaded (loadBases).
func (p basePlan) checkNames() error {
	var claims []nameClaim
	for _, f := range slices.Concat(p.baseFolders, p.cacheFolders) {
		if id := f.ID(); f.Named() && id != "" {
			claims = append(claims, nameClaim{ref: f.Ref(), param: p.folderParam[f], id: id})
		}
	}
	return checkNameClaims(claims)
}

// checkSavedImage recognises a base folder's layout before the daemon
// starts (pkg/baseimage: a get with save: true, registry-image-resource's
// oci and oci-layout formats, oci-build-task's output) and applies the
// entry's name, if it gives one.
func checkSavedImage(param string, entry protocol.BaseEntry, dir string) (*baseimage.Folder, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("params.%s: %s is not a folder (it should be the output of a get with save: true, or of registry-image-resource or oci-build-task)", param, dir)
	}
	if entry.Repository != "" {
		if err := protocol.ValidateRepository("params."+param+".repository", entry.Repository); err != nil {
			return nil, err
		}
		if entry.Tag != "" {
			if err := protocol.ValidateTag("params."+param+".tag", string(entry.Tag)); err != nil {
				return nil, err
			}
		}
	}
	f, err := baseimage.Detect(dir, baseimage.HostPlatform())
	if err != nil {
		return nil, fmt.Errorf("params.%s: %w", param, err)
	}
	f.Name(entry.Repository, string(entry.Tag))
	return f, nil
}
