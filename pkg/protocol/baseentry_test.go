package protocol

import (
	"strings"
	"testing"
)

func TestBaseEntryForms(t *testing.T) {
	p, err := ParseOut(strings.NewReader(`{"source": {"repository": "r"}, "params": {"build": "b",
		"load_base": "base",
		"load_bases": ["one", {"path": "two", "repository": "reg:5000/team/two", "tag": 1.10}, {"path": "three", "repository": "three"}],
		"cache_from": [{"path": "c"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	o := p.Request.Params
	if o.LoadBase != (BaseEntry{Path: "base"}) {
		t.Errorf("load_base %+v", o.LoadBase)
	}
	want := []BaseEntry{{Path: "one"}, {Path: "two", Repository: "reg:5000/team/two", Tag: "1.10"}, {Path: "three", Repository: "three"}}
	if len(o.LoadBases) != 3 || o.LoadBases[0] != want[0] || o.LoadBases[1] != want[1] || o.LoadBases[2] != want[2] {
		t.Errorf("load_bases %+v", o.LoadBases)
	}
	if len(o.CacheFrom) != 1 || o.CacheFrom[0] != (BaseEntry{Path: "c"}) {
		t.Errorf("cache_from %+v", o.CacheFrom)
	}
}

func TestBaseEntryErrors(t *testing.T) {
	for _, c := range []struct{ params, want string }{
		{`"load_base": {"pth": "x"}`, `params.load_base: unknown entry key "pth" — did you mean "path"?`},
		{`"load_bases": ["a", {"repository": "r"}]`, `params.load_bases[1]: the object form needs path`},
		{`"cache_from": [{"path": "a", "tag": "1"}]`, `params.cache_from[0]: tag without repository`},
		{`"load_base": 3`, `params.load_base: expected a folder path or an object {path, repository, tag}, got the number 3`},
		{`"load_base": {"path": "a", "tag": []}`, `params.load_base: tag: expected a string or a number, got a list`},
	} {
		_, err := ParseOut(strings.NewReader(`{"source": {"repository": "r"}, "params": {"build": "b", ` + c.params + `}}`))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.params, err, c.want)
		}
	}
}
