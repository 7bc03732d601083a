"""promtool, built from the Go module here (`build`), for the tests of the alerting rules."""
