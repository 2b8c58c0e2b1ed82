# References for lmerTest's anova() term structure (the port of the type I/II/III hypotheses
# onto lmmfast's own R terms()): formulas where terms()'s coding matters, as lmerTest 3.1 reads
# it: a factor nested in a factor (recipe/temperature: recipe:temperature codes recipe by
# indicators, so lmerTest finds recipe contained in no term), a matrix variable (poly(temp, 2) is
# not "numeric" among dataClasses, so recipe is contained in recipe:poly(temp, 2)), and a coding
# given by lmer's contrasts= argument (helmert: type III is that of the treatment coding).
# usage (from this folder): Rscript refs_anova_terms.R ../../lmmfast/datasets -> refs_anova_terms.json
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
dd <- commandArgs(trailingOnly = TRUE)[1]
rd <- function(name, factors = character()) {
  d <- read.csv(file.path(dd, paste0(name, ".csv")), stringsAsFactors = TRUE)
  for (v in factors) d[[v]] <- factor(d[[v]])
  d
}
# derived factors: the same definitions are in tests/test_anova.py (_data)
cake <- rd("cake", "replicate")
cake$temperature <- factor(as.character(cake$temperature))
Penicillin <- rd("Penicillin")
Penicillin$sgrp <- factor(ifelse(Penicillin$sample %in% c("A", "B", "C"), "s1", "s2"))
Penicillin$pgrp <- factor(ifelse(Penicillin$plate %in% letters[1:8], "p1",
                          ifelse(Penicillin$plate %in% letters[9:16], "p2", "p3")))
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))
models <- list(
  cake_nested = quote(lmer(angle ~ recipe/temperature + (1 | recipe:replicate), data = cake, control = ctrl)),
  cake_poly = quote(lmer(angle ~ recipe * poly(temp, 2) + (1 | recipe:replicate), data = cake, control = ctrl)),
  penicillin_helmert = quote(lmer(diameter ~ sgrp * pgrp + (1 | plate) + (1 | sample), data = Penicillin, contrasts = list(pgrp = "contr.helmert"), control = ctrl))
)
tab <- function(a) {
  a <- as.data.frame(a)
  out <- lapply(a, function(col) unname(col))
  out$rownames <- rownames(a)
  out
}
res <- list(anova = list())
for (id in names(models)) {
  f <- eval(models[[id]])
  entry <- list(call = deparse(models[[id]], width.cutoff = 500L), REML = isREML(f),
                theta = I(unname(getME(f, "theta"))), objective = REMLcrit(f),
                xnames = names(fixef(f)))
  # cake_poly, type 1: lmerTest's table (recipe:poly(temp, 2): Sum Sq 20.16) disagrees with
  # contest() of the same hypothesis matrix (20.08) and with its type 2 and 3 tables (19.87),
  # whose hypothesis for this last term spans the same space: not a reference, left out
  for (type in if (id == "cake_poly") c("2", "3") else c("1", "2", "3")) {
    entry[[paste0("satterthwaite_", type)]] <- tab(anova(f, type = type, ddf = "Satterthwaite"))
    entry[[paste0("kenward-roger_", type)]] <- tab(anova(f, type = type, ddf = "Kenward-Roger"))
  }
  res$anova[[id]] <- entry
}
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, null = "null", na = "null"), "refs_anova_terms.json")
