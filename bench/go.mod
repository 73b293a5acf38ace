module github.com/ampmux/ampmux/bench

go 1.26

require github.com/ampmux/ampmux v0.0.0

replace github.com/ampmux/ampmux => ../
