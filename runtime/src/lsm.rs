//! Linux security modules: AppArmor profiles and SELinux labels.
