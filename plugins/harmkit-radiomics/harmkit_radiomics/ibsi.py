"""Correspondence between pyradiomics features and IBSI 1 reference tags.

``IBSI_TAGS`` maps each harmkit feature name (``<class>_<Feature>``) to the
IBSI 1 feature tag used in the reference-value tables (mirp naming, e.g.
``cm_contrast_3D_avg``). pyradiomics computes 3D GLCM and GLRLM features per
direction and averages them, which is IBSI's ``3D_avg`` aggregation; GLSZM,
GLDM (IBSI's NGLDM with alpha 0, distance 1) and NGTDM use one 3D matrix.

``DEVIATIONS`` lists features whose definition differs from IBSI and how to
convert; ``NO_REFERENCE`` lists computed features IBSI has no value for.
See ``docs/features.md``.
"""

from __future__ import annotations

IBSI_TAGS: dict[str, str] = {
    # first order: intensity statistics (stat_) and intensity histogram (ih_, on the discretised image)
    "firstorder_Energy": "stat_energy",
    "firstorder_Entropy": "ih_entropy",
    "firstorder_Minimum": "stat_min",
    "firstorder_10Percentile": "stat_p10",
    "firstorder_90Percentile": "stat_p90",
    "firstorder_Maximum": "stat_max",
    "firstorder_Mean": "stat_mean",
    "firstorder_Median": "stat_median",
    "firstorder_InterquartileRange": "stat_iqr",
    "firstorder_Range": "stat_range",
    "firstorder_MeanAbsoluteDeviation": "stat_mad",
    "firstorder_RobustMeanAbsoluteDeviation": "stat_rmad",
    "firstorder_RootMeanSquared": "stat_rms",
    "firstorder_Skewness": "stat_skew",
    "firstorder_Kurtosis": "stat_kurt",
    "firstorder_Variance": "stat_var",
    "firstorder_Uniformity": "ih_uniformity",
    # GLCM, averaged over the 13 3D directions
    "glcm_Autocorrelation": "cm_auto_corr_3D_avg",
    "glcm_JointAverage": "cm_joint_avg_3D_avg",
    "glcm_ClusterProminence": "cm_clust_prom_3D_avg",
    "glcm_ClusterShade": "cm_clust_shade_3D_avg",
    "glcm_ClusterTendency": "cm_clust_tend_3D_avg",
    "glcm_Contrast": "cm_contrast_3D_avg",
    "glcm_Correlation": "cm_corr_3D_avg",
    "glcm_DifferenceAverage": "cm_diff_avg_3D_avg",
    "glcm_DifferenceEntropy": "cm_diff_entr_3D_avg",
    "glcm_DifferenceVariance": "cm_diff_var_3D_avg",
    "glcm_JointEnergy": "cm_energy_3D_avg",
    "glcm_JointEntropy": "cm_joint_entr_3D_avg",
    "glcm_Imc1": "cm_info_corr1_3D_avg",
    "glcm_Imc2": "cm_info_corr2_3D_avg",
    "glcm_Idm": "cm_inv_diff_mom_3D_avg",
    "glcm_Idmn": "cm_inv_diff_mom_norm_3D_avg",
    "glcm_Id": "cm_inv_diff_3D_avg",
    "glcm_Idn": "cm_inv_diff_norm_3D_avg",
    "glcm_InverseVariance": "cm_inv_var_3D_avg",
    "glcm_MaximumProbability": "cm_joint_max_3D_avg",
    "glcm_SumAverage": "cm_sum_avg_3D_avg",
    "glcm_SumEntropy": "cm_sum_entr_3D_avg",
    "glcm_SumSquares": "cm_joint_var_3D_avg",
    # GLRLM, averaged over the 13 3D directions
    "glrlm_ShortRunEmphasis": "rlm_sre_3D_avg",
    "glrlm_LongRunEmphasis": "rlm_lre_3D_avg",
    "glrlm_GrayLevelNonUniformity": "rlm_glnu_3D_avg",
    "glrlm_GrayLevelNonUniformityNormalized": "rlm_glnu_norm_3D_avg",
    "glrlm_RunLengthNonUniformity": "rlm_rlnu_3D_avg",
    "glrlm_RunLengthNonUniformityNormalized": "rlm_rlnu_norm_3D_avg",
    "glrlm_RunPercentage": "rlm_r_perc_3D_avg",
    "glrlm_GrayLevelVariance": "rlm_gl_var_3D_avg",
    "glrlm_RunVariance": "rlm_rl_var_3D_avg",
    "glrlm_RunEntropy": "rlm_rl_entr_3D_avg",
    "glrlm_LowGrayLevelRunEmphasis": "rlm_lgre_3D_avg",
    "glrlm_HighGrayLevelRunEmphasis": "rlm_hgre_3D_avg",
    "glrlm_ShortRunLowGrayLevelEmphasis": "rlm_srlge_3D_avg",
    "glrlm_ShortRunHighGrayLevelEmphasis": "rlm_srhge_3D_avg",
    "glrlm_LongRunLowGrayLevelEmphasis": "rlm_lrlge_3D_avg",
    "glrlm_LongRunHighGrayLevelEmphasis": "rlm_lrhge_3D_avg",
    # GLSZM (3D)
    "glszm_SmallAreaEmphasis": "szm_sze_3D",
    "glszm_LargeAreaEmphasis": "szm_lze_3D",
    "glszm_GrayLevelNonUniformity": "szm_glnu_3D",
    "glszm_GrayLevelNonUniformityNormalized": "szm_glnu_norm_3D",
    "glszm_SizeZoneNonUniformity": "szm_zsnu_3D",
    "glszm_SizeZoneNonUniformityNormalized": "szm_zsnu_norm_3D",
    "glszm_ZonePercentage": "szm_z_perc_3D",
    "glszm_GrayLevelVariance": "szm_gl_var_3D",
    "glszm_ZoneVariance": "szm_zs_var_3D",
    "glszm_ZoneEntropy": "szm_zs_entr_3D",
    "glszm_LowGrayLevelZoneEmphasis": "szm_lgze_3D",
    "glszm_HighGrayLevelZoneEmphasis": "szm_hgze_3D",
    "glszm_SmallAreaLowGrayLevelEmphasis": "szm_szlge_3D",
    "glszm_SmallAreaHighGrayLevelEmphasis": "szm_szhge_3D",
    "glszm_LargeAreaLowGrayLevelEmphasis": "szm_lzlge_3D",
    "glszm_LargeAreaHighGrayLevelEmphasis": "szm_lzhge_3D",
    # GLDM = IBSI neighbouring grey level dependence matrix (alpha 0, Chebyshev distance 1)
    "gldm_SmallDependenceEmphasis": "ngl_lde_3D",
    "gldm_LargeDependenceEmphasis": "ngl_hde_3D",
    "gldm_GrayLevelNonUniformity": "ngl_glnu_3D",
    "gldm_DependenceNonUniformity": "ngl_dcnu_3D",
    "gldm_DependenceNonUniformityNormalized": "ngl_dcnu_norm_3D",
    "gldm_GrayLevelVariance": "ngl_gl_var_3D",
    "gldm_DependenceVariance": "ngl_dc_var_3D",
    "gldm_DependenceEntropy": "ngl_dc_entr_3D",
    "gldm_LowGrayLevelEmphasis": "ngl_lgce_3D",
    "gldm_HighGrayLevelEmphasis": "ngl_hgce_3D",
    "gldm_SmallDependenceLowGrayLevelEmphasis": "ngl_ldlge_3D",
    "gldm_SmallDependenceHighGrayLevelEmphasis": "ngl_ldhge_3D",
    "gldm_LargeDependenceLowGrayLevelEmphasis": "ngl_hdlge_3D",
    "gldm_LargeDependenceHighGrayLevelEmphasis": "ngl_hdhge_3D",
    # NGTDM (3D)
    "ngtdm_Coarseness": "ngt_coarseness_3D",
    "ngtdm_Contrast": "ngt_contrast_3D",
    "ngtdm_Busyness": "ngt_busyness_3D",
    "ngtdm_Complexity": "ngt_complexity_3D",
    "ngtdm_Strength": "ngt_strength_3D",
    # shape (not among the 93 by default; enable with classes=[..., "shape"])
    "shape_MeshVolume": "morph_volume",
    "shape_VoxelVolume": "morph_vol_approx",
    "shape_SurfaceArea": "morph_area_mesh",
    "shape_SurfaceVolumeRatio": "morph_av",
    "shape_Sphericity": "morph_sphericity",
    "shape_Maximum3DDiameter": "morph_diam",
    "shape_MajorAxisLength": "morph_pca_maj_axis",
    "shape_MinorAxisLength": "morph_pca_min_axis",
    "shape_LeastAxisLength": "morph_pca_least_axis",
    "shape_Elongation": "morph_pca_elongation",
    "shape_Flatness": "morph_pca_flatness",
}

#: Features whose pyradiomics definition differs from IBSI: name -> (reason, conversion to the IBSI value).
DEVIATIONS: dict[str, tuple[str, str]] = {
    "firstorder_Kurtosis": (
        "pyradiomics reports the kurtosis m4/m2^2; IBSI defines the excess kurtosis m4/m2^2 - 3",
        "ibsi = pyradiomics - 3",
    ),
    **{
        f"shape_{axis}AxisLength": (
            "pyradiomics normalises the covariance of the voxel-centre coordinates by N (number of voxels); "
            "the IBSI reference values are reproduced with the sample covariance (N - 1), so pyradiomics' "
            "axis lengths are smaller by sqrt((N - 1) / N) (0.7 % for the 74-voxel phantom, < 0.1 % above 500 voxels); "
            "Elongation and Flatness are ratios and agree",
            "ibsi = pyradiomics * sqrt(N / (N - 1))",
        )
        for axis in ("Major", "Minor", "Least")
    },
}

#: Features pyradiomics computes that have no IBSI 1 reference value.
NO_REFERENCE: dict[str, str] = {
    "firstorder_TotalEnergy": "Energy scaled by the voxel volume; not an IBSI feature",
    "glcm_MCC": "maximal correlation coefficient; not in IBSI 1",
    "shape_Maximum2DDiameterSlice": "per-plane diameters are not IBSI features",
    "shape_Maximum2DDiameterColumn": "per-plane diameters are not IBSI features",
    "shape_Maximum2DDiameterRow": "per-plane diameters are not IBSI features",
}


def to_ibsi(name: str, value: float, voxels: int | None = None) -> float:
    """Convert a pyradiomics value to the IBSI definition where they differ.

    ``voxels`` (the number of voxels in the mask) is needed for the PCA axis lengths.
    """
    if name == "firstorder_Kurtosis":
        return value - 3.0
    if name in (
        "shape_MajorAxisLength",
        "shape_MinorAxisLength",
        "shape_LeastAxisLength",
    ):
        if not voxels or voxels < 2:
            raise ValueError(f"{name}: the number of mask voxels is needed for the conversion")
        return value * (voxels / (voxels - 1)) ** 0.5
    return value
