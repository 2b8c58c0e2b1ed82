# Why pbkrtest's Kenward-Roger df differ from lmmfast's for prior weights (no reference file:
# tests/test_kenward_roger_oracle.py uses refs_present.json's sleep_weights numbers, made by
# refs_present.R). Prints pbkrtest's df and the diagonal of the residual G of get_SigmaG:
# all ones whatever the weights, while vcovAdj's Phi is lme4's weighted vcov.
# Run: Rscript tests/reference/kr_weights_pbkrtest.R   (pbkrtest 0.5.2, lme4 1.1-31)
suppressMessages({library(lme4); library(pbkrtest)})
data(sleepstudy, package = "lme4")
sleepstudy$w <- 0.5 + (seq_len(nrow(sleepstudy)) %% 4) / 2
f <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, weights = w,
          control = lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
A <- vcovAdj(f)
cat("KR df:", sapply(1:2, function(i) Lb_ddf(diag(2)[i, ], vcov(f), A)), "\n")
G <- get_SigmaG(f)$G
cat("residual G diagonal range:", range(Matrix::diag(G[[length(G)]])), "\n")
cat("weights range:", range(weights(f)), "\n")
