# The seed example, then a short tour of bgpool. Run with `make demo`.
library(bgpool)

cat("== The seed example\n")
init_pool()
x <- 42
pool_export("x")
print(pool_sapply(1:10, function(y) x + y))

cat("\n== An AzureStor-style transfer: copy files in parallel with pool_map()\n")
src <- file.path(tempdir(), sprintf("src-%02d.txt", 1:20))
dest <- file.path(tempdir(), sprintf("dest-%02d.txt", 1:20))
for (f in src) writeLines(paste("contents of", basename(f)), f)
copied <- pool_map(function(src, dest) file.copy(src, dest, overwrite = TRUE),
                   src = src, dest = dest)
cat(sum(unlist(copied)), "of", length(src), "files copied\n")

cat("\n== 10,000 tiny tasks, dynamically scheduled in adaptive chunks\n")
elapsed <- system.time(res <- pool_map(function(i) i * 2, 1:10000))[["elapsed"]]
cat(sprintf("%d results in %.3f s, in input order: %s\n", length(res), elapsed,
            identical(unlist(res), (1:10000) * 2)))

cat("\n== A large export travels once, through shared memory\n")
big <- runif(1e7)  # 80 MB
elapsed <- system.time({
  pool_export("big")
  sums <- pool_evalq(sum(big))
})[["elapsed"]]
cat(sprintf("80 MB to %d workers in %.2f s; each worker's sum is the master's: %s\n",
            pool_size(), elapsed, all(unlist(sums) == sum(big))))

cat("\n== A failing task names its element (its warning is relayed); the others still run\n")
err <- tryCatch(pool_map(function(f) readLines(f), c(src[1:2], "no-such-file.txt")),
                error = function(e) e)
cat(conditionMessage(err), "\n")
cat("results kept for elements:", which(!vapply(err$results, is.null, NA)), "\n")

cat("\n== The same pool as a parallel cluster, and reproducible random numbers\n")
cl <- pool_cluster()
print(parallel::parSapply(cl, 1:5, function(i) i^2))
draws <- function() pool_sapply(1:4, function(i) round(runif(1), 4), .seed = 1)
cat("the same draws twice with .seed = 1:", identical(draws(), draws()), "\n")

cat("\n== init_pool() again resets the same workers\n")
pids <- unlist(pool_call(Sys.getpid))
init_pool()
cat("same processes:", identical(pids, unlist(pool_call(Sys.getpid))),
    "| x still defined on a worker:", pool_evalq(exists("x"))[[1]], "\n")

delete_pool()
unlink(c(src, dest))
