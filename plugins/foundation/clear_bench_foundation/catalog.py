"""Names of the foundation models this plugin offers (no torch import: used to list and check configs)."""

from __future__ import annotations

BIOMEDCLIP_HUB_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
MERLIN_HUB_ID = "stanfordmimi/Merlin"
MERLIN_HUB_FILE = "i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt"
DINOV2_MODELS = ("vit_small_patch14_dinov2.lvd142m", "vit_base_patch14_dinov2.lvd142m",
                 "vit_large_patch14_dinov2.lvd142m", "vit_giant_patch14_dinov2.lvd142m",
                 "vit_small_patch14_reg4_dinov2.lvd142m", "vit_base_patch14_reg4_dinov2.lvd142m",
                 "vit_large_patch14_reg4_dinov2.lvd142m", "vit_giant_patch14_reg4_dinov2.lvd142m")
SAM2_MODELS = ("sam2_hiera_tiny.fb_r896", "sam2_hiera_small.fb_r896", "sam2_hiera_base_plus.fb_r896",
               "sam2_hiera_large.fb_r1024", "sam2_hiera_tiny.fb_r896_2pt1", "sam2_hiera_small.fb_r896_2pt1",
               "sam2_hiera_base_plus.fb_r896_2pt1", "sam2_hiera_large.fb_r1024_2pt1")
DINO_MODELS = ("vit_small_patch16_224.dino", "vit_small_patch8_224.dino", "vit_base_patch16_224.dino",
               "vit_base_patch8_224.dino")
RAD_DINO_HUB_ID = "microsoft/rad-dino"
MEDSIGLIP_HUB_ID = "google/medsiglip-448"
CTFM_HUB_ID = "project-lighter/ct_fm_feature_extractor"
