# lme4's choice of dropped fixed-effect columns on rank-deficient designs (issue 8, item 5).
# usage (from this folder): Rscript rank_drop.R
# writes rank_drop.csv (the data, seeded) and rank_drop.json: per case the formula, the
# kept columns (names(fixef(fit))) and the dropped ones (lme4's "fixed-effect model matrix
# is rank deficient so dropping ..." columns: attr(fit@pp$X, "col.dropped")), and the
# pivot of base R's qr(X, tol = 1e-7) (LINPACK dqrdc2, what lme4's chkRank.drop.cols uses).
suppressMessages({library(lme4); library(jsonlite)})
set.seed(20261201)
n <- 600
h <- factor(sprintf("h%02d", sample(30, n, replace = TRUE)))
g <- factor(sprintf("g%02d", sample(40, n, replace = TRUE)))   # 40-level fixed factor
a <- factor(sample(c("a1", "a2", "a3"), n, replace = TRUE))
b <- factor(sample(c("b1", "b2", "b3", "b4"), n, replace = TRUE))
b[a == "a3" & b == "b4"] <- "b3"                                # an empty cell of a:b
x <- rnorm(n)
x2 <- 2 * x                                                     # a multiple of x
x3 <- x - 1                                                     # x and the intercept
gz <- rnorm(40)
z <- gz[as.integer(g)]                                          # constant within g
y <- x + rnorm(30)[as.integer(h)] + rnorm(40)[as.integer(g)] / 2 + rnorm(n)
d <- data.frame(y, x, x2, x3, z, g, h, a, b)
write.csv(d, "rank_drop.csv", row.names = FALSE)
d <- read.csv("rank_drop.csv", stringsAsFactors = TRUE)
cases <- list(
  multiples = y ~ x + x2 + x3 + (1 | h),
  within_factor = y ~ x + z + g + (1 | h),
  factor_first = y ~ g + x + z + (1 | h),
  empty_cell = y ~ x + a * b + (1 | h),
  many = y ~ x2 + a * b + x + g + z + x3 + (1 | h)
)
out <- list()
for (id in names(cases)) {
  f <- suppressMessages(lmer(cases[[id]], data = d, REML = TRUE))
  X <- model.matrix(lme4::nobars(cases[[id]]), d)
  q <- qr(X, tol = 1e-7)
  out[[id]] <- list(
    formula = deparse(cases[[id]]),
    kept = names(fixef(f)),
    dropped = I(as.character(names(attr(f@pp$X, "col.dropped")))),
    qr_rank = q$rank,
    qr_kept = I(colnames(X)[sort(q$pivot[seq_len(q$rank)])])
  )
}
writeLines(toJSON(out, auto_unbox = TRUE, pretty = TRUE), "rank_drop.json")
