library(testthat)
library(bgpool)

test_check("bgpool")
