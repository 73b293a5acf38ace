package benchkit

import (
	"context"
	"testing"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

func TestRawSum(t *testing.T) {
	tests := []struct {
		args map[string]string
		want string // total, or "" for an UNKNOWN error
	}{
		{map[string]string{"a": "13", "b": "81"}, "94"},
		{map[string]string{"a": "-5", "b": "5"}, "0"},
		{map[string]string{"a": "13"}, ""},
		{map[string]string{"a": "x", "b": "1"}, ""},
		{map[string]string{"a": "1", "b": "1.5"}, ""},
	}
	for _, tt := range tests {
		var resp box.Box
		err := RawSum(context.Background(), box.FromMap(tt.args), &resp)
		if tt.want == "" {
			re, ok := err.(*amp.RemoteError)
			if !ok || re.Code != amp.CodeUnknown {
				t.Errorf("%v: got %v, want an UNKNOWN RemoteError", tt.args, err)
			}
			continue
		}
		if err != nil || resp.GetString("total") != tt.want {
			t.Errorf("%v: total %q, %v; want %s", tt.args, resp.GetString("total"), err, tt.want)
		}
	}
	if err := CheckSum(box.FromMap(map[string]string{"total": "94"})); err != nil {
		t.Error(err)
	}
	if err := CheckSum(box.FromMap(map[string]string{"total": "95"})); err == nil {
		t.Error("CheckSum accepted 95")
	}
}
